//! Output splitting and perfdata parsing over the real plugin outputs collected in
//! reference/boot-ral-nagios.md §C.5.

use super::*;

#[test]
fn real_outputs() {
    let load = "LOAD OK - total load average: 2.46, 3.19, 2.05|load1=2.460;15.000;30.000;0; load5=3.190;10.000;25.000;0; load15=2.050;5.000;20.000;0; \n";
    let out = split(load);
    assert_eq!(out.summary, "LOAD OK - total load average: 2.46, 3.19, 2.05");
    let (items, errors) = parse_perfdata(&out.perfdata);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0],
        PerfItem {
            label: "load1".into(),
            value: Some(2.46),
            uom: String::new(),
            warn: Some("15.000".into()),
            crit: Some("30.000".into()),
            min: Some(0.0),
            max: None
        }
    );

    let disk = "DISK OK - free space: / 78645MiB (84% inode=97%);| /=15106834432B;216442024755;243497277849;0;270552530944";
    let out = split(disk);
    assert_eq!(out.summary, "DISK OK - free space: / 78645MiB (84% inode=97%);");
    let (items, _) = parse_perfdata(&out.perfdata);
    assert_eq!(
        (items[0].label.as_str(), items[0].value, items[0].uom.as_str()),
        ("/", Some(15_106_834_432.0), "B")
    );
    assert_eq!(items[0].max, Some(270_552_530_944.0));

    let age = "FILE_AGE CRITICAL: /etc/hostname is 1002 seconds old and 3 bytes | age=1002s;10;20 size=3B;0;0;0";
    let (items, _) = parse_perfdata(&split(age).perfdata);
    assert_eq!(
        (items[0].value, items[0].uom.as_str(), items[0].crit.as_deref()),
        (Some(1002.0), "s", Some("20"))
    );
    assert_eq!((items[1].label.as_str(), items[1].uom.as_str()), ("size", "B"));

    let procs = "PROCS CRITICAL: 0 processes with command name 'sshd' | procs=0;;1:1;0;";
    let (items, _) = parse_perfdata(&split(procs).perfdata);
    assert_eq!((items[0].warn.as_deref(), items[0].crit.as_deref()), (None, Some("1:1")));

    let users = "USERS OK - 0 users currently logged in |users=0;5;10;0";
    let (items, _) = parse_perfdata(&split(users).perfdata);
    assert_eq!(items[0].value, Some(0.0));

    let swap = "SWAP CRITICAL - 0% free (0MB out of 0MB) - Swap is either disabled, not present, or of zero size. |swap=0B;0;0;0;0";
    assert_eq!(parse_perfdata(&split(swap).perfdata).0[0].uom, "B");

    let refused = "connect to address 127.0.0.1 and port 1: Connection refused";
    assert_eq!(
        split(refused),
        PluginOutput { summary: refused.into(), long_output: vec![], perfdata: String::new() }
    );
}

#[test]
fn multi_line_output_is_kept_whole() {
    let text = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n/home=69357MB;253404;253409;0;253414\n/var/log=818MB;970;975;0;980\n";
    let out = split(text);
    assert_eq!(out.summary, "DISK OK - free space: / 3326 MB (56%);");
    assert_eq!(
        out.long_output,
        [
            "/ 15272 MB (77%);",
            "/boot 68 MB (69%);",
            "/home 69357 MB (27%);",
            "/var/log 819 MB (84%);"
        ]
    );
    let (items, errors) = parse_perfdata(&out.perfdata);
    assert!(errors.is_empty());
    let labels: Vec<&str> = items.iter().map(|i| i.label.as_str()).collect();
    assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
}

#[test]
fn quirks() {
    let (items, errors) =
        parse_perfdata("'disk usage'=5%;80;90 'it''s'=U 'x y'=1c time=0.002s;;;0;");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(items[0].label, "disk usage");
    assert_eq!(items[0].uom, "%");
    assert_eq!(items[1].label, "it's");
    assert_eq!(items[1].value, None);
    assert_eq!(items[2].uom, "c");
    assert_eq!(
        (items[3].value, items[3].uom.as_str(), items[3].min),
        (Some(0.002), "s", Some(0.0))
    );
    let (items, errors) = parse_perfdata("ok=1 broken novalue= 'open=1");
    assert_eq!(items.len(), 1);
    assert_eq!(errors.len(), 3);
    let (items, _) = parse_perfdata("big=1e3 temp=-4.5C");
    assert_eq!(items[0].value, Some(1000.0));
    assert_eq!((items[1].value, items[1].uom.as_str()), (Some(-4.5), "C"));
}

proptest::proptest! {
    #[test]
    fn never_panics(text in ".{0,200}") {
        let out = split(&text);
        let _ = parse_perfdata(&out.perfdata);
    }
}
