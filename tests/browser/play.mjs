// node play.mjs URL SECONDS — plays an HLS stream with hls.js in headless
// Chromium for SECONDS and prints one JSON line: what the viewer saw.
//
//   played   seconds of the stream that played (currentTime advanced)
//   stalls   times playback waited for data for half a second or more after
//            it had started (a spinner a viewer notices)
//   stalled  seconds spent waiting after it had started, short waits included
//   waits    every wait after it had started, however short
//   loaded   fragments loaded
//   errors   network errors hls.js reported (it retries them itself)
//   fatal    the error that stopped playback, if one did
//   origins  fragments loaded per origin (scheme://host:port) of the URL
//            hls.js asked for: the publisher's for redirects, a box's for a
//            content-steering pathway
//   switches each time fragments started coming from another origin, with when
//
// Debian's chromium (CHROMIUM overrides /usr/bin/chromium), driven by
// playwright-core: no browser download. Run `npm ci` here first.
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const [url, secondsArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node play.mjs URL [SECONDS]');
  process.exit(2);
}
const seconds = Number(secondsArg || 30);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--autoplay-policy=no-user-gesture-required',
    '--mute-audio',
    // `dandelion up` serves https under its own CA.
    '--ignore-certificate-errors',
  ],
});
try {
  const page = await browser.newPage();
  await page.setContent('<video id="v" muted autoplay playsinline></video>');
  await page.addScriptTag({ path: require.resolve('hls.js/dist/hls.min.js') });
  const report = await page.evaluate(
    async ({ url, seconds }) => {
      const video = document.getElementById('v');
      const r = {
        played: 0, stalls: 0, stalled: 0, waits: 0, loaded: 0, errors: [], fatal: null,
        origins: {}, switches: [],
      };
      if (!Hls.isSupported()) {
        r.fatal = 'hls.js is not supported here (no MediaSource for H.264?)';
        return r;
      }
      const hls = new Hls({ liveSyncDurationCount: 3 });
      let lastOrigin = null;
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
        r.loaded++;
        const origin = new URL(d.frag.url).origin;
        r.origins[origin] = (r.origins[origin] || 0) + 1;
        if (origin !== lastOrigin) {
          r.switches.push(`${((performance.now() - t0) / 1000).toFixed(1)}s ${origin}`);
          lastOrigin = origin;
        }
      });
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (d.type === Hls.ErrorTypes.NETWORK_ERROR) {
          const status = d.response && d.response.code ? ` (${d.response.code})` : '';
          const at = ((performance.now() - t0) / 1000).toFixed(1);
          const why = d.details.endsWith('ParsingError') && d.error ? ` (${d.error.message})` : '';
          r.errors.push(`${at}s ${d.details}${status} ${d.frag ? d.frag.url : d.url || ''}${why}`.trim());
        }
        if (d.fatal) r.fatal = d.details;
      });
      const t0 = performance.now();
      let started = null;
      let waitingSince = null;
      const waited = () => {
        if (waitingSince === null) return;
        const s = (performance.now() - waitingSince) / 1000;
        r.stalled += s;
        if (s >= 0.5) r.stalls++;
        waitingSince = null;
      };
      video.addEventListener('playing', () => {
        if (started === null) started = video.currentTime;
        waited();
      });
      video.addEventListener('waiting', () => {
        if (started !== null && waitingSince === null) {
          r.waits++;
          waitingSince = performance.now();
        }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      video.play().catch(() => {});
      await new Promise((done) => setTimeout(done, seconds * 1000));
      waited();
      r.played = started === null ? 0 : video.currentTime - started;
      hls.destroy();
      return r;
    },
    { url, seconds },
  );
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
