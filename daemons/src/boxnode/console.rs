//! The box's console feed: its own files, traffic, storage and publishers,
//! re-sent whole when something changed (files are few and change together).

use std::sync::Arc;

use async_trait::async_trait;
use dandelion_core::console::Update;

use super::BoxState;
use crate::console::Source;

/// The box as a console [`Source`].
#[derive(Debug)]
pub struct Feed(pub Arc<BoxState>);

#[async_trait]
impl Source for Feed {
    async fn view(&self) -> Result<Update, String> {
        Ok(Update::BoxNode(super::api::view(&self.0)))
    }
}
