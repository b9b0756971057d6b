//! Parser tests: every operation, split at every byte boundary, and each error.

use super::*;

fn parse_all(input: &[u8]) -> Result<Vec<ClientOp>, ParseError> {
    let mut parser = Parser::new(4096, 1024 * 1024);
    let mut buf = BytesMut::from(input);
    let mut ops = Vec::new();
    while let Some(op) = parser.parse(&mut buf)? {
        ops.push(op);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(ops)
}

/// Feeds `input` one byte at a time: "need more bytes" must never lose or misread anything.
fn parse_trickle(input: &[u8]) -> Result<Vec<ClientOp>, ParseError> {
    let mut parser = Parser::new(4096, 1024 * 1024);
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for byte in input {
        buf.extend_from_slice(&[*byte]);
        while let Some(op) = parser.parse(&mut buf)? {
            ops.push(op);
        }
    }
    Ok(ops)
}

const TRANSCRIPT: &[u8] =
    b"CONNECT {\"verbose\":true,\"pedantic\":false,\"headers\":true,\"echo\":false,\"x\":1}\r\n\
sub foo.* q 1\r\nSUB  bar   2 \r\nUNSUB 1 5\r\nUNSUB 2\r\nPUB foo.a 5\r\nhello\r\n\
PUB foo.b reply.1 0\r\n\r\nHPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\nPONG\nPING\r\n";

#[test]
fn transcript() {
    let ops = parse_all(TRANSCRIPT).unwrap();
    let ClientOp::Connect(connect) = &ops[0] else { panic!("{:?}", ops[0]) };
    assert!(connect.verbose && connect.headers && !connect.echo && !connect.pedantic);
    assert_eq!(
        ops[1..],
        [
            ClientOp::Sub { subject: "foo.*".into(), queue: Some("q".into()), sid: "1".into() },
            ClientOp::Sub { subject: "bar".into(), queue: None, sid: "2".into() },
            ClientOp::Unsub { sid: "1".into(), max: Some(5) },
            ClientOp::Unsub { sid: "2".into(), max: None },
            ClientOp::Pub(Publish {
                subject: "foo.a".into(),
                reply: None,
                header_len: None,
                payload: Bytes::from_static(b"hello"),
            }),
            ClientOp::Pub(Publish {
                subject: "foo.b".into(),
                reply: Some("reply.1".into()),
                header_len: None,
                payload: Bytes::new(),
            }),
            ClientOp::Pub(Publish {
                subject: "h".into(),
                reply: None,
                header_len: Some(12),
                payload: Bytes::from_static(b"NATS/1.0\r\n\r\nhi"),
            }),
            ClientOp::Ping,
            ClientOp::Pong,
            ClientOp::Ping,
        ]
    );
    assert_eq!(parse_trickle(TRANSCRIPT).unwrap(), ops);
}

#[test]
fn omitted_options_default_as_in_nats_server() {
    let ops = parse_all(b"CONNECT {}\r\n").unwrap();
    let ClientOp::Connect(connect) = &ops[0] else { panic!() };
    assert!(connect.echo && connect.verbose && connect.pedantic);
    assert!(!connect.headers && !connect.no_responders);
}

#[track_caller]
fn check_err(input: &[u8], expect: ParseError) {
    assert_eq!(parse_all(input).unwrap_err(), expect);
    assert_eq!(parse_trickle(input).unwrap_err(), expect);
}

#[test]
fn errors() {
    check_err(b"HELLO\r\n", ParseError::UnknownOperation);
    check_err(b"\xff\xfe\r\n", ParseError::UnknownOperation);
    check_err(b"PUB foo\r\n", ParseError::Arguments("PUB"));
    check_err(b"PUB foo abc\r\n", ParseError::Arguments("PUB"));
    check_err(b"PUB foo -1\r\n", ParseError::Arguments("PUB"));
    check_err(b"PUB a b c d\r\n", ParseError::Arguments("PUB"));
    check_err(b"HPUB foo 10 5\r\n", ParseError::Arguments("HPUB"));
    check_err(b"SUB foo\r\n", ParseError::Arguments("SUB"));
    check_err(b"UNSUB 1 x\r\n", ParseError::Arguments("UNSUB"));
    check_err(b"PUB foo 99999999\r\n", ParseError::MaxPayload);
    check_err(b"PUB foo 2\r\nhello\r\n", ParseError::PayloadTerminator);
    check_err(b"PUB foo 5\r\nhi\r\nPING\r\n", ParseError::PayloadTerminator);
    check_err(b"CONNECT {bad\r\n", ParseError::ConnectJson);
    check_err(b"CONNECT [1]\r\n", ParseError::ConnectJson);
}

#[test]
fn garbage_is_refused_before_the_line_ends() {
    let mut parser = Parser::new(4096, 1024);
    let mut buf = BytesMut::from(&[0xffu8; 10][..]);
    assert_eq!(parser.parse(&mut buf), Err(ParseError::UnknownOperation));
    for partial in [&b"CONN"[..], b"conn", b"PU", b"  SUB foo", b"HPUB x 1 2", b""] {
        let mut parser = Parser::new(4096, 1024);
        let mut buf = BytesMut::from(partial);
        assert_eq!(parser.parse(&mut buf), Ok(None), "{partial:?}");
    }
    let mut buf = BytesMut::from(&b"PUBLISH foo"[..]);
    assert_eq!(Parser::new(4096, 1024).parse(&mut buf), Err(ParseError::UnknownOperation));
}

#[test]
fn control_line_limit() {
    let mut long = b"PUB ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 5000));
    // Without a newline: refused as soon as the limit is passed, not when the line ends.
    check_err(&long, ParseError::ControlLineTooLong);
    long.extend_from_slice(b" 2\r\n");
    check_err(&long, ParseError::ControlLineTooLong);
}

#[test]
fn need_more_bytes_is_not_an_error() {
    let mut parser = Parser::new(4096, 1024);
    let mut buf = BytesMut::from(&b"PUB foo 5\r\nhel"[..]);
    assert_eq!(parser.parse(&mut buf), Ok(None));
    buf.extend_from_slice(b"lo\r");
    assert_eq!(parser.parse(&mut buf), Ok(None));
    buf.extend_from_slice(b"\n");
    assert!(matches!(parser.parse(&mut buf), Ok(Some(ClientOp::Pub(_)))));
}
