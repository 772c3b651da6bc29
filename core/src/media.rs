//! What a published name says about its bytes: the `Content-Type` a box and
//! the publisher serve it with, the same from both, because players pick their
//! demuxer by it.

/// Whether a name is an HLS playlist (`.m3u8`): the publisher answers those
/// itself, and `push --watch` sends one only after what it lists.
pub fn is_playlist(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("m3u8"))
}

/// `Content-Type` by extension: what HLS/DASH players check, then the common rest.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "m3u8" | "m3u" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "webm" => "video/webm",
        "vtt" => "text/vtt",
        "key" => "application/octet-stream",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}
