//! The tonic edge: converts wire messages to [`crate::push`] types and back.
//! Nothing here decides anything.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hotpush_proto as pb;
use hotpush_proto::offer::Form;
use hotpush_proto::push_request::Msg as In;
use hotpush_proto::push_response::Msg as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::agent::Agent;
use crate::session::{self, Inbound, Outbound};
use crate::verify::Offered;

/// The Agent gRPC service.
pub struct AgentService {
    pub agent: Arc<Agent>,
}

fn to_inbound(msg: Result<pb::PushRequest, Status>) -> Option<Inbound> {
    match msg {
        Ok(pb::PushRequest {
            msg: Some(In::Offer(o)),
        }) => Some(match o.form {
            Some(Form::Manifest(m)) => Inbound::Offer(Offered::Whole(m)),
            Some(Form::Delta(d)) => Inbound::Offer(Offered::Delta(d)),
            Some(Form::Parts(p)) => Inbound::OfferParts {
                len: p.manifest_len,
                signatures: p.signatures,
            },
            None => Inbound::Malformed("Offer without a manifest".into()),
        }),
        Ok(pb::PushRequest {
            msg: Some(In::Chunk(c)),
        }) => Some(Inbound::Chunk {
            digest: c.digest,
            offset: c.offset,
            data: c.data,
        }),
        Ok(pb::PushRequest {
            msg: Some(In::Part(p)),
        }) => Some(Inbound::ManifestPart(p.data)),
        Ok(pb::PushRequest {
            msg: Some(In::Commit(_)),
        }) => Some(Inbound::Commit),
        Ok(pb::PushRequest {
            msg: Some(In::Flip(_)),
        }) => Some(Inbound::Flip),
        Ok(pb::PushRequest { msg: None }) => Some(Inbound::Malformed("empty message".into())),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
            ) =>
        {
            Some(Inbound::Malformed(format!(
                "undecodable message: {}",
                status.message()
            )))
        }
        // Transport gone: treat as a closed stream (partial blobs are kept).
        Err(_) => None,
    }
}

fn to_response(out: Outbound) -> pb::PushResponse {
    let msg = match out {
        Outbound::Want { blobs, max_chunk } => Out::Want(pb::Want {
            max_chunk_bytes: max_chunk as u64,
            blobs: blobs
                .into_iter()
                .map(|(d, offset)| pb::WantedBlob {
                    digest: Bytes::copy_from_slice(&d.0),
                    offset,
                })
                .collect(),
        }),
        Outbound::Staged(repo, version, digest) => Out::Staged(pb::Staged {
            repo: repo.to_string(),
            version,
            manifest_digest: Bytes::copy_from_slice(&digest.0),
        }),
        Outbound::Ack(ack) => Out::Ack(pb::Ack::from(&ack)),
        Outbound::Reject(code, reason) => Out::Reject(pb::Reject {
            code: code as i32,
            reason,
        }),
    };
    pb::PushResponse { msg: Some(msg) }
}

type PushStream = Pin<Box<dyn Stream<Item = Result<pb::PushResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    type PushStream = PushStream;

    async fn push(
        &self,
        request: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<PushStream>, Status> {
        let peer = hotpush_shared::transport::peer_id(&request)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let inbound = request
            .into_inner()
            .map(to_inbound)
            .take_while(|m| std::future::ready(m.is_some()))
            .filter_map(std::future::ready);
        // Small and bounded: the origin waits for our Want/Ack anyway.
        let (tx, rx) = mpsc::channel(4);
        let agent = self.agent.clone();
        let span = tracing::info_span!("push", origin = %&peer[..peer.len().min(16)]);
        tokio::spawn(session::run(agent, Box::pin(inbound), tx).instrument(span));
        let out = ReceiverStream::new(rx).map(|o| Ok(to_response(o)));
        Ok(Response::new(Box::pin(out)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        crate::status::collect(&self.agent)
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
