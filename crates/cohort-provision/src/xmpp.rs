//! The `xmpp:` sender: one short client session per message — TCP, STARTTLS (required; the
//! server's certificate is checked against the system's roots plus `ca_file`), SASL login
//! (SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, as the server offers), resource binding, one chat
//! message, a clean stream close. Built from tokio-xmpp's stream pieces rather than its
//! `Client`, which reconnects forever on a wrong password where a notifier must fail at once
//! and say why; the whole session has one deadline.

use std::str::FromStr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message as ChatMessage, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts,
    XmppStreamElement, initiate_stream,
};
use tokio_xmpp::{Stanza, client_login};

use crate::notify::{Message, XmppConfig, read_secret};

const BIND_ID: &str = "cohort-bind";

/// Where to connect for `jid`: `server` if set (`IP:PORT`, `HOST` or `HOST:PORT`), else the
/// domain's `_xmpp-client._tcp` SRV record, else the domain on port 5222.
pub(crate) fn server_for(server: Option<&str>, jid: &BareJid) -> Result<DnsConfig, String> {
    let Some(server) = server else {
        return Ok(DnsConfig::srv_default_client(jid.domain().as_str()));
    };
    if server.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(DnsConfig::addr(server));
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("notify xmpp.server {server:?}: {port:?} is not a port"))?;
            Ok(DnsConfig::no_srv(host, port))
        }
        _ => Ok(DnsConfig::no_srv(server, 5222)),
    }
}

/// Sends `message` to `to` as the configured account.
pub(crate) async fn send(
    config: &XmppConfig,
    to: &str,
    message: &Message,
) -> Result<String, String> {
    let account = config.jid.as_deref().ok_or_else(|| {
        format!("cannot send to xmpp:{to}: no sending account ([notify.xmpp] jid)")
    })?;
    let jid =
        BareJid::from_str(account).map_err(|err| format!("notify xmpp.jid {account:?}: {err}"))?;
    if jid.node().is_none() {
        return Err(format!("notify xmpp.jid {account:?}: needs a user part (user@domain)"));
    }
    let recipient = Jid::from_str(to).map_err(|err| format!("xmpp:{to}: {err}"))?;
    let password = match &config.password_file {
        Some(path) => read_secret(path)?,
        None => return Err(format!("cannot send to xmpp:{to}: no [notify.xmpp] password_file")),
    };
    let server = server_for(config.server.as_deref(), &jid)?;
    let tls = tls_config(config.ca_file.as_deref())?;
    let session = session(jid.clone(), password, server, tls, recipient, message);
    match tokio::time::timeout(config.timeout, session).await {
        Ok(Ok(())) => Ok(format!("sent to xmpp:{to} as {jid}")),
        Ok(Err(err)) => Err(format!("xmpp:{to} as {jid}: {err}")),
        Err(_) => Err(format!("xmpp:{to} as {jid}: no answer within {:?}", config.timeout)),
    }
}

/// The system's roots, plus the certificates in `ca_file` (a private CA's XMPP server).
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|err| format!("notify xmpp.ca_file {}: {err}", path.display()))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert =
                cert.map_err(|err| format!("notify xmpp.ca_file {}: {err}", path.display()))?;
            roots
                .add(cert)
                .map_err(|err| format!("notify xmpp.ca_file {}: {err}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "notify xmpp.ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader { to: Some(domain.into()), from: None, id: None }
}

type Tls = BufStream<TlsStream<TcpStream>>;

/// TCP, the clear-text stream header, `<starttls/>` (refused if the server does not offer it:
/// a password never crosses in clear), the TLS handshake checked for `domain`, the stream
/// header again; the channel binding for SCRAM-PLUS when TLS 1.3 gives one.
async fn open_tls(
    server: &DnsConfig,
    domain: &str,
    tls: Arc<rustls::ClientConfig>,
    timeouts: Timeouts,
) -> Result<(PendingFeaturesRecv<Tls>, ChannelBinding), String> {
    let tcp = server.resolve().await.map_err(|err| format!("cannot connect: {err}"))?;
    let plain = initiate_stream(BufStream::new(tcp), ns::JABBER_CLIENT, header(domain), timeouts)
        .await
        .map_err(|err| format!("cannot open the stream: {err}"))?;
    let (features, mut plain) = plain
        .recv_features::<FallibleStreamElement>()
        .await
        .map_err(|err| format!("no stream features: {err}"))?;
    if !features.can_starttls() {
        return Err("the server does not offer STARTTLS; not logging in in clear text".to_owned());
    }
    plain
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(starttls::Request)))
        .await
        .map_err(|err| format!("starttls: {err}"))?;
    loop {
        match plain.next().await.map(|read| read.and_then(|e| e.into_read_error())) {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(err)) => return Err(format!("starttls: {err}")),
            None => return Err("starttls: the server closed the stream".to_owned()),
        }
    }
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|err| format!("{domain:?} is not a TLS server name: {err}"))?;
    let tcp = plain.into_inner().into_inner();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS with {domain}: {err}"))?;
    let (_, connection) = stream.get_ref();
    let binding = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => connection
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .map(ChannelBinding::TlsExporter)
            .unwrap_or(ChannelBinding::None),
        _ => ChannelBinding::None,
    };
    let pending =
        initiate_stream(BufStream::new(stream), ns::JABBER_CLIENT, header(domain), timeouts)
            .await
            .map_err(|err| format!("cannot open the stream over TLS: {err}"))?;
    Ok((pending, binding))
}

async fn session(
    jid: BareJid,
    password: String,
    server: DnsConfig,
    tls: Arc<rustls::ClientConfig>,
    to: Jid,
    message: &Message,
) -> Result<(), String> {
    let jid = Jid::from(jid);
    let user = jid.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let (pending, binding) =
        open_tls(&server, jid.domain().as_str(), tls, Timeouts::default()).await?;
    let (features, stream) = pending
        .recv_features::<FallibleStreamElement>()
        .await
        .map_err(|err| format!("no stream features: {err}"))?;
    let credentials = sasl::common::Credentials::default()
        .with_username(user)
        .with_password(password)
        .with_channel_binding(binding);
    let stream = client_login(stream, features.sasl_mechanisms, credentials)
        .await
        .map_err(|err| format!("login refused: {err}"))?;
    let stream = stream
        .send_header(header(jid.domain().as_str()))
        .await
        .map_err(|err| format!("stream restart: {err}"))?;
    let (_features, mut stream) = stream
        .recv_features::<FallibleStreamElement>()
        .await
        .map_err(|err| format!("no stream features after login: {err}"))?;

    let bind = Stanza::Iq(Iq::from_set(BIND_ID, BindQuery::new(None)));
    stream.send(&bind).await.map_err(|err| format!("cannot bind a resource: {err}"))?;
    loop {
        let element = match stream.next().await.map(|read| read.and_then(|e| e.into_read_error())) {
            Some(Ok(element)) => element,
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(err)) => return Err(format!("while binding a resource: {err}")),
            None => return Err("the server closed the stream while binding a resource".to_owned()),
        };
        match element {
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Result {
                id,
                payload: Some(payload),
                ..
            })) if id == BIND_ID => {
                BindResponse::try_from(payload)
                    .map_err(|err| format!("unreadable resource binding: {err}"))?;
                break;
            }
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Error { id, error, .. })) if id == BIND_ID => {
                return Err(format!("resource binding refused: {:?}", error.defined_condition));
            }
            XmppStreamElement::StreamError(error) => {
                return Err(format!("stream error: {error}"));
            }
            _ => {}
        }
    }

    let mut chat = ChatMessage::new_with_type(MessageType::Chat, Some(to));
    chat.subjects.insert(Lang::default(), message.subject.clone());
    chat.bodies.insert(Lang::default(), message.message.clone());
    stream
        .send(&Stanza::Message(chat))
        .await
        .map_err(|err| format!("cannot send the message: {err}"))?;
    // The close sends the stream footer and waits for the server's, so the message has been
    // read by the server before we report it sent.
    SinkExt::<&Stanza>::close(&mut stream)
        .await
        .map_err(|err| format!("closing the stream: {err}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_read_as_addresses_hosts_or_srv() {
        let jid = BareJid::from_str("cohort@example.com").unwrap();
        assert!(matches!(server_for(None, &jid), Ok(DnsConfig::UseSrv { .. })));
        assert!(matches!(server_for(Some("127.0.0.1:5299"), &jid), Ok(DnsConfig::Addr { .. })));
        assert!(matches!(server_for(Some("[::1]:5222"), &jid), Ok(DnsConfig::Addr { .. })));
        assert!(matches!(
            server_for(Some("chat.example.com:5223"), &jid),
            Ok(DnsConfig::NoSrv { port: 5223, .. })
        ));
        assert!(matches!(
            server_for(Some("chat.example.com"), &jid),
            Ok(DnsConfig::NoSrv { port: 5222, .. })
        ));
        let err = server_for(Some("chat.example.com:http"), &jid).unwrap_err();
        assert!(err.contains("\"http\" is not a port"), "{err}");
    }
}
