//! The HTTP backend: the GMS Email API, `POST {base_url}/genesys/2/email/{service_name}` as
//! `multipart/form-data`.
//!
//! Owns the GMS field names (those of Web API "Send Email" without `tenantName`) and the
//! reading of HTTP outcomes as retryable (network, 408, 429, 5xx) or not (other 4xx).
//! GMS does not relay: it files the e-mail as an inbound interaction, so `fromAddress` is the
//! customer's (whom the agent answers), and `mailbox` is sent only when the e-mail has one,
//! which intake and the deliverer have checked against the allow-list.
//! Attachment bodies are streamed from the spool files, never read whole.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, StatusCode};
use tokio_util::io::ReaderStream;

use super::compose::INTERACTION_ID_HEADER;
use super::{DeliveryError, EmailBackend};
use crate::config::HttpConfig;
use crate::envelope::Envelope;

/// Posts to a GMS e-mail service.
pub struct HttpBackend {
    client: reqwest::Client,
    url: String,
    api_key: Option<config_types::Secret>,
}

impl HttpBackend {
    pub fn new(config: &HttpConfig, timeout: Duration) -> Result<Self, super::StartError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(super::StartError::HttpClient)?;
        Ok(HttpBackend {
            client,
            url: format!(
                "{}/genesys/2/email/{}",
                config.base_url.trim_end_matches('/'),
                config.service_name
            ),
            api_key: config.api_key.clone(),
        })
    }
}

#[async_trait]
impl EmailBackend for HttpBackend {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn deliver(&self, email: &Envelope, dir: &Path) -> Result<(), DeliveryError> {
        let mut form = Form::new()
            .text("firstName", email.first_name.clone())
            .text("lastName", email.last_name.clone())
            .text("fromAddress", email.from_address.clone())
            .text("subject", email.subject.clone())
            .text("text", email.text.clone());
        if let Some(mailbox) = &email.mailbox {
            form = form.text("mailbox", mailbox.clone());
        }
        for (key, value) in &email.user_data {
            form = form.text("userData", format!("{key}={value}"));
        }
        for attachment in &email.attachments {
            let file = super::open_attachment(dir, attachment).await?;
            let body = Body::wrap_stream(ReaderStream::new(file));
            let part = Part::stream_with_length(body, attachment.size)
                .file_name(attachment.file_name.clone())
                .mime_str(&attachment.content_type)
                .map_err(|e| DeliveryError::permanent(format!("content type: {e}")))?;
            form = form.part("files", part);
        }
        let mut request = self
            .client
            .post(&self.url)
            .header(INTERACTION_ID_HEADER, &email.interaction_id)
            .multipart(form);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| DeliveryError::transient(format!("POST {}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(500).collect();
        Err(DeliveryError {
            retry,
            message: format!("POST {} answered {status}: {body}", self.url),
        })
    }
}
