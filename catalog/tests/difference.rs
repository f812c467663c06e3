//! A sweep's report: each difference as one line, its kind (strum's text) in a column of 12.

use kollus_catalog::sweep::Difference;

#[test]
fn a_difference_reads_as_its_kind_in_a_column_then_what_differed() {
    let u = || "u1".to_owned();
    let lines = [
        (Difference::New { upload: u() }, "new         upload u1"),
        (
            Difference::Join {
                upload: u(),
                media: "m1".into(),
                channel: "c1".into(),
            },
            "join        m1 in channel c1 (upload u1)",
        ),
        (
            Difference::Leave {
                upload: u(),
                media: "m1".into(),
                channel: "c1".into(),
            },
            "leave       m1 from channel c1 (upload u1)",
        ),
        (
            Difference::Described {
                upload: u(),
                fields: "title".into(),
            },
            "described   upload u1: title",
        ),
        (
            Difference::Reappeared { upload: u() },
            "reappeared  upload u1",
        ),
        (
            Difference::Absent { upload: u() },
            "absent      upload u1 (not listed, not found)",
        ),
        (
            Difference::Unlisted { upload: u() },
            "unlisted    upload u1 (in no list, found on its own)",
        ),
    ];
    for (d, line) in lines {
        assert_eq!(d.to_string(), line);
        assert_eq!(Some(d.kind()), line.split(' ').next());
    }
}
