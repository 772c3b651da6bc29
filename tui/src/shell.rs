//! The event loop: key presses, daemon updates, ticks and signals merged in one
//! `select!`, pending updates drained before each draw, and at most one frame
//! per [`FRAME`] so a flood of updates cannot starve the keyboard. A key press
//! is drawn sooner, [`KEY_FRAME`] after the last frame at the latest.

use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{App, Effect, Input};
use crate::contexts::Source;
use crate::input::{action, key_of};
use crate::net;
use crate::theme::Theme;

/// The shortest time between two frames.
pub const FRAME: Duration = Duration::from_millis(33);
/// The shortest time between a frame and the next when a key was pressed: the
/// operator sees the key's effect at once rather than at the next paced frame
/// (up to [`FRAME`] later while a daemon floods updates), yet a burst of keys
/// (a held key, a paste) still cannot draw more often than this.
pub const KEY_FRAME: Duration = Duration::from_millis(8);
/// Updates applied between two draws at most, so input is read in between.
const DRAIN: usize = 4096;
/// Inputs queued from the network tasks before they wait.
const INPUTS: usize = 8192;

/// Runs the console on `terminal` until the operator quits or a signal arrives.
/// `contexts` is where `:context NAME` looks.
pub async fn run(
    terminal: &mut ratatui::DefaultTerminal,
    mut app: App,
    theme: &Theme,
    first: Vec<Effect>,
    contexts: &Source,
) -> anyhow::Result<()> {
    let (mut tx, mut rx) = mpsc::channel::<Input>(INPUTS);
    for effect in first {
        net::spawn(effect, tx.clone());
    }
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut dirty = true;
    // A key was pressed since the last frame.
    let mut keyed = false;
    let mut last_draw = Instant::now() - FRAME;
    loop {
        let gap = if keyed { KEY_FRAME } else { FRAME };
        if dirty && last_draw.elapsed() >= gap {
            terminal.draw(|f| crate::ui::draw(f, &app, theme))?;
            last_draw = Instant::now();
            dirty = false;
            keyed = false;
        }
        let next_frame = last_draw + gap;
        let mut effects = Vec::new();
        tokio::select! {
            biased;
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(k))) => {
                    let typing = matches!(
                        app.mode,
                        crate::app::Mode::Filter(_) | crate::app::Mode::Command(_) | crate::app::Mode::Confirm { .. }
                    );
                    if let Some(a) = key_of(&k).and_then(|k| action(k, typing)) {
                        effects = app.update(Input::Action(a));
                        dirty = true;
                        keyed = true;
                    } else if matches!(app.mode, crate::app::Mode::Help) {
                        // Any key closes the help.
                        effects = app.update(Input::Action(crate::input::Action::Back));
                        dirty = true;
                        keyed = true;
                    }
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            input = rx.recv() => {
                if let Some(input) = input {
                    effects = app.update(input);
                    let mut drained = 1;
                    while drained < DRAIN {
                        let Ok(more) = rx.try_recv() else { break };
                        effects.extend(app.update(more));
                        drained += 1;
                    }
                    dirty = true;
                }
            }
            _ = tick.tick() => {
                app.update(Input::Tick(net::now()));
                dirty = true;
            }
            () = tokio::time::sleep_until(next_frame), if dirty => {}
        }
        let mut effects = std::collections::VecDeque::from(effects);
        while let Some(effect) = effects.pop_front() {
            match effect {
                Effect::Quit => return Ok(()),
                Effect::SwitchContext(name) => match crate::contexts::open(contexts, &name) {
                    Ok((urls, tokens)) => {
                        // A new channel cuts the old tabs' feeds off: their
                        // next send fails and they end, and what they queued
                        // is dropped with the old receiver, so nothing of
                        // theirs reaches the new tabs that reuse their numbers.
                        (tx, rx) = mpsc::channel::<Input>(INPUTS);
                        effects.extend(app.open_context(&name, &urls, tokens));
                    }
                    Err(e) => app.say_error(&format!("{e:#}")),
                },
                // As for a context: the old feeds end at their next send.
                Effect::Rewire => (tx, rx) = mpsc::channel::<Input>(INPUTS),
                other => net::spawn(other, tx.clone()),
            }
            dirty = true;
        }
    }
}
