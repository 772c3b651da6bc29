//! A publisher's own copy of a file, fetched back from a box that holds it.
//!
//! With several front ends on one store, a file too big for the store lives
//! on the disk of the front end that took its upload, which made a first copy
//! on a box before acknowledging it (`api::first_copy`) and makes the others
//! from its disk. Should it die before every copy is made, no other front end
//! could make the rest — boxes do not copy to each other — and the file would
//! stay on one box, lost with it. So the front end that takes such a job once
//! the holder is taken for dead fetches the file from a box that holds it, as
//! a viewer would, and keeps it only if its size and SHA-256 are the job's: a
//! box cannot slip other bytes in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use dandelion_core::fsio;
use dandelion_core::http::HttpClient;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Publisher;
use super::intake::make_durable;
use super::jobs::Job;

/// How long a box may take to answer, and then to send the next bytes,
/// before the next box is asked.
const STALL: Duration = Duration::from_secs(30);

/// Fetches `job`'s file from the first of `urls` (its copies on boxes) that
/// gives back exactly its bytes, into the origin directory, durably.
pub async fn from_boxes(p: &Publisher, job: &Job, urls: &[String]) -> Result<(), String> {
    let http = HttpClient::new(STALL);
    let mut errors = Vec::new();
    for url in urls {
        let target = p.origin_path(&job.name);
        let tmp = target.with_extension(format!("partial-{}", p.draw(usize::MAX)));
        match fetch(&http, job, url, &tmp, target).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                errors.push(format!("{url}: {e}"));
            }
        }
    }
    Err(if errors.is_empty() {
        "no box holds a copy to fetch it from".to_owned()
    } else {
        format!("no box gave the file back: {}", errors.join("; "))
    })
}

async fn fetch(
    http: &HttpClient,
    job: &Job,
    url: &str,
    tmp: &Path,
    target: PathBuf,
) -> Result<(), String> {
    let response = http.get_streamed(url).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let mut body = Body::new(response.into_body()).into_data_stream();
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(STALL, body.next()).await {
            Err(_) => return Err(format!("sent nothing for {} s", STALL.as_secs())),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("cut off: {e}")),
            Ok(Some(Ok(chunk))) => chunk,
        };
        size += chunk.len() as u64;
        if size > job.size {
            return Err(format!("sent more than the file's {} bytes", job.size));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    if size != job.size {
        return Err(format!("sent {size} of the file's {} bytes", job.size));
    }
    let sha256 = format!("{:x}", hasher.finalize());
    if sha256 != job.sha256 {
        return Err(format!(
            "sent other bytes (SHA-256 {sha256}, not the file's {})",
            job.sha256
        ));
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let file = file.into_std().await;
    let tmp = tmp.to_owned();
    fsio::blocking(move || make_durable(&file, &tmp, &target))
        .await
        .map_err(|e| format!("cannot keep the copy: {e}"))
}
