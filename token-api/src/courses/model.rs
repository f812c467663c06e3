//! What a course is: its lessons and the rules it is judged by (SPEC.md section 8), as the
//! product app writes it (`PUT /v1/courses/{course_id}`, [`CourseBody`], every invalid field
//! named) and as it is stored and answered ([`Course`], every default filled). The console uses
//! these (a feature may use another's model, never its handlers).

use std::collections::HashSet;

use kollus_common::domain::{ChannelKey, MediaContentKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::problem::{ApiError, FieldError};

/// Lessons a course may list.
pub const MAX_LESSONS: usize = 500;
/// The longest recognised time a lesson may be given, in seconds (a day).
pub const MAX_RECOGNISED_SECONDS: i32 = 86_400;
/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Rows a refund table may have.
pub const MAX_REFUND_ROWS: usize = 20;
/// The fastest `max_playback_rate` a course may give: the fastest rate a token may offer.
pub const FASTEST_RATE: f64 = 4.0;
/// A course's time zone when the body gives none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Seoul";

/// How a lesson's recognised seconds are counted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Count {
    /// Real time: the sessions' `showtime` (time in play state, not speed-weighted), capped by
    /// the lesson's recognised time and, when reports carry blocks, by the share of blocks ever
    /// played.
    #[default]
    Showtime,
    /// The share of the lesson's blocks ever played, times its recognised time.
    Blocks,
}

kollus_common::text_column!(Count);

impl Count {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// When a lesson and the course are complete, and when the next lesson opens.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CourseCompletion)]
pub struct Completion {
    /// A lesson is complete at this percent of its recognised time.
    #[schema(minimum = 1, maximum = 100)]
    pub lesson_percent: i32,
    /// The course is complete at this progress (진도율), percent.
    #[schema(minimum = 1, maximum = 100)]
    pub course_percent: i32,
    pub count: Count,
    /// A lesson counts nothing until this percent of its recognised time is met.
    #[schema(minimum = 0, maximum = 100)]
    pub floor_percent: i32,
    /// The next lesson opens when this one reaches this percent (with `unlock_in_order`).
    #[schema(minimum = 1, maximum = 100)]
    pub unlock_percent: i32,
}

impl Default for Completion {
    fn default() -> Self {
        Self {
            lesson_percent: 80,
            course_percent: 80,
            count: Count::Showtime,
            floor_percent: 50,
            unlock_percent: 80,
        }
    }
}

/// One row of a refund table: before `below_percent` of the course is used, `refund_percent`
/// of the fee is refunded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRow {
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub below_percent: i32,
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100)]
    pub refund_percent: i32,
}

/// The refund a course's policy allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refund {
    /// 학원법 시행령 별표 4: before the course starts (no play), all; before 1/3 of it, 2/3;
    /// before 1/2, 1/2; after, none.
    Academy,
    /// No refund.
    None,
    /// The first row whose `below_percent` the course used is under; none: 0. Rows ascending.
    Table(Vec<RefundRow>),
}

impl Refund {
    /// The policy's name: `academy`, `none` or `table`.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Academy => "academy",
            Self::None => "none",
            Self::Table(_) => "table",
        }
    }
}

/// A lesson as stored: its video, and the recognised time given for it (null: the catalog's
/// duration, else the longest `duration` the video's reports gave).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CourseLesson)]
pub struct Lesson {
    pub media_content_key: String,
    #[schema(required = true, minimum = 1, maximum = 86400)]
    pub recognised_seconds: Option<i32>,
}

/// The rules a course is judged by: everything of a [`Course`] but its id, title, lessons and
/// bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rules {
    #[schema(required = true)]
    pub channel_key: Option<String>,
    pub completion: Completion,
    /// Seconds of study a day (60 to 86400); null: no limit.
    #[schema(required = true, minimum = 60, maximum = 86400)]
    pub daily_limit_seconds: Option<i32>,
    pub one_player_at_a_time: bool,
    pub unlock_in_order: bool,
    /// The fastest playback the course allows (1 to 4).
    #[schema(minimum = 1, maximum = 4)]
    pub max_playback_rate: f64,
    /// IANA time zone "today" is counted in.
    pub time_zone: String,
    pub refund: Refund,
}

/// A course as stored and answered: every default filled.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Course {
    pub course_id: String,
    pub title: String,
    pub lessons: Vec<Lesson>,
    #[serde(flatten)]
    pub rules: Rules,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// The name of the API key that made the last change.
    pub changed_by: String,
}

/// `completion` as written: every field optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CourseCompletionBody)]
pub struct CompletionBody {
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 1, maximum = 100, default = 80)]
    pub lesson_percent: Option<i32>,
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 1, maximum = 100, default = 80)]
    pub course_percent: Option<i32>,
    #[serde(default)]
    pub count: Option<Count>,
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 0, maximum = 100, default = 50)]
    pub floor_percent: Option<i32>,
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 1, maximum = 100, default = 80)]
    pub unlock_percent: Option<i32>,
}

/// A lesson as written: a media content key, or the key with its recognised time.
// (The document's schema of a lesson: lessons are read by hand, `lesson`, so every fault of each
// is named.)
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged, deny_unknown_fields)]
#[schema(as = CourseLessonBody)]
pub enum LessonBody {
    Key(MediaContentKey),
    Lesson {
        media_content_key: MediaContentKey,
        #[schema(minimum = 1, maximum = 86400)]
        recognised_seconds: Option<i32>,
    },
}

/// The body of `PUT /v1/courses/{course_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CourseBody)]
pub struct CourseBody {
    /// 1 to 500 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub title: String,
    /// 1 to 500 lessons in course order, no video twice.
    #[schema(value_type = Vec<LessonBody>, min_items = 1, max_items = 500)]
    pub lessons: Vec<serde_json::Value>,
    #[serde(default)]
    pub channel_key: Option<ChannelKey>,
    #[serde(default)]
    pub completion: CompletionBody,
    #[serde(default, deserialize_with = "crate::json::opt_whole")]
    #[schema(minimum = 60, maximum = 86400)]
    pub daily_limit_seconds: Option<i32>,
    #[serde(default)]
    pub one_player_at_a_time: bool,
    #[serde(default)]
    pub unlock_in_order: bool,
    /// Default: HISTORY_MAX_PLAYBACK_RATE.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4)]
    pub max_playback_rate: Option<f64>,
    /// An IANA time zone (e.g. Asia/Seoul, UTC): "today" for `today_seconds` and the daily
    /// limit.
    #[serde(default)]
    #[schema(default = "Asia/Seoul")]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub refund: Option<Refund>,
}

/// A course as the body defines it, checked: what the store writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub title: String,
    pub lessons: Vec<Lesson>,
    pub rules: Rules,
}

/// Parses and checks a course body: every invalid field named at once; defaults filled
/// (`max_playback_rate`: `default_rate`, HISTORY_MAX_PLAYBACK_RATE).
pub fn parse_body(body: &[u8], default_rate: f64) -> Result<Definition, ApiError> {
    unknown_fields(body)?;
    let b: CourseBody = crate::problem::json_body(body)?;
    let mut errors = Vec::new();
    let mut refuse = |field: String, message: String| errors.push(FieldError { field, message });

    let title = b.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        refuse(
            "title".into(),
            format!("must be 1 to {MAX_TITLE_CHARS} characters"),
        );
    } else if title.chars().any(char::is_control) {
        refuse("title".into(), "must not hold control characters".into());
    }

    if b.lessons.is_empty() || b.lessons.len() > MAX_LESSONS {
        refuse(
            "lessons".into(),
            format!("lists {} lessons; give 1 to {MAX_LESSONS}", b.lessons.len()),
        );
    }
    let mut lessons = Vec::with_capacity(b.lessons.len());
    let mut seen = HashSet::new();
    for (i, v) in b.lessons.iter().enumerate() {
        match lesson(v) {
            Ok(l) => {
                if !seen.insert(l.media_content_key.clone()) {
                    refuse(
                        format!("lessons[{i}]"),
                        format!(
                            "{} is listed twice; a video is one lesson of a course",
                            l.media_content_key
                        ),
                    );
                }
                lessons.push(l);
            }
            Err((field, message)) => refuse(format!("lessons[{i}]{field}"), message),
        }
    }

    let defaults = Completion::default();
    let c = &b.completion;
    let mut percent = |name: &str, v: Option<i32>, min: i32, default: i32| -> i32 {
        match v {
            None => default,
            Some(v) if (min..=100).contains(&v) => v,
            Some(v) => {
                refuse(
                    format!("completion.{name}"),
                    format!("{v} is not a percent from {min} to 100"),
                );
                default
            }
        }
    };
    let completion = Completion {
        lesson_percent: percent(
            "lesson_percent",
            c.lesson_percent,
            1,
            defaults.lesson_percent,
        ),
        course_percent: percent(
            "course_percent",
            c.course_percent,
            1,
            defaults.course_percent,
        ),
        count: c.count.unwrap_or_default(),
        floor_percent: percent("floor_percent", c.floor_percent, 0, defaults.floor_percent),
        unlock_percent: percent(
            "unlock_percent",
            c.unlock_percent,
            1,
            defaults.unlock_percent,
        ),
    };

    if let Some(d) = b.daily_limit_seconds {
        if !(60..=86_400).contains(&d) {
            refuse(
                "daily_limit_seconds".into(),
                format!("{d} is not 60 to 86400 seconds; null for no limit"),
            );
        }
    }
    let max_playback_rate = match b.max_playback_rate {
        // HISTORY_MAX_PLAYBACK_RATE may be set above what a course may name.
        None => default_rate.clamp(1.0, FASTEST_RATE),
        Some(r) if r.is_finite() && (1.0..=FASTEST_RATE).contains(&r) => r,
        Some(r) => {
            refuse(
                "max_playback_rate".into(),
                format!("{r} is not a playback rate from 1 to {FASTEST_RATE}"),
            );
            default_rate
        }
    };
    let time_zone = b.time_zone.unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned());
    if time_tz::timezones::get_by_name(&time_zone).is_none() {
        refuse(
            "time_zone".into(),
            format!("{time_zone:?} is no IANA time zone (e.g. Asia/Seoul)"),
        );
    }
    let refund = b.refund.unwrap_or(Refund::Academy);
    if let Refund::Table(rows) = &refund {
        if rows.is_empty() || rows.len() > MAX_REFUND_ROWS {
            refuse(
                "refund.table".into(),
                format!("has {} rows; give 1 to {MAX_REFUND_ROWS}", rows.len()),
            );
        }
        let mut below = 0;
        for (i, r) in rows.iter().enumerate() {
            if !(1..=100).contains(&r.below_percent) {
                refuse(
                    format!("refund.table[{i}].below_percent"),
                    format!("{} is not a percent from 1 to 100", r.below_percent),
                );
            } else if r.below_percent <= below {
                refuse(
                    format!("refund.table[{i}].below_percent"),
                    format!(
                        "{} does not follow {below}: rows go up by below_percent",
                        r.below_percent
                    ),
                );
            }
            below = below.max(r.below_percent);
            if !(0..=100).contains(&r.refund_percent) {
                refuse(
                    format!("refund.table[{i}].refund_percent"),
                    format!("{} is not a percent from 0 to 100", r.refund_percent),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    Ok(Definition {
        title,
        lessons,
        rules: Rules {
            channel_key: b.channel_key.map(String::from),
            completion,
            daily_limit_seconds: b.daily_limit_seconds,
            one_player_at_a_time: b.one_player_at_a_time,
            unlock_in_order: b.unlock_in_order,
            max_playback_rate,
            time_zone,
            refund,
        },
    })
}

/// The body's fields no course has, every one named (serde stops at the first).
fn unknown_fields(body: &[u8]) -> Result<(), ApiError> {
    const TOP: &[&str] = &[
        "title",
        "lessons",
        "channel_key",
        "completion",
        "daily_limit_seconds",
        "one_player_at_a_time",
        "unlock_in_order",
        "max_playback_rate",
        "time_zone",
        "refund",
    ];
    const COMPLETION: &[&str] = &[
        "lesson_percent",
        "course_percent",
        "count",
        "floor_percent",
        "unlock_percent",
    ];
    // Not an object (or not JSON): serde says so, naming what it expected.
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Ok(());
    };
    let mut errors = Vec::new();
    let mut unknown =
        |prefix: &str, o: &serde_json::Map<String, serde_json::Value>, known: &[&str]| {
            for k in o.keys().filter(|k| !known.contains(&k.as_str())) {
                errors.push(FieldError {
                    field: format!("{prefix}{k}"),
                    message: format!("unknown field `{k}`, expected one of {}", known.join(", ")),
                });
            }
        };
    unknown("", &top, TOP);
    if let Some(serde_json::Value::Object(c)) = top.get("completion") {
        unknown("completion.", c, COMPLETION);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// One lesson of the body: a key, or `{media_content_key, recognised_seconds}`; an error names
/// the part of it (after `lessons[i]`) and says what is wrong.
fn lesson(v: &serde_json::Value) -> Result<Lesson, (String, String)> {
    use serde_json::Value;
    let key = |v: &Value, field: &str| -> Result<String, (String, String)> {
        let s = v.as_str().ok_or_else(|| {
            (
                field.to_owned(),
                "must be a media content key (a string)".to_owned(),
            )
        })?;
        MediaContentKey::parse(s)
            .map(String::from)
            .map_err(|e| (field.to_owned(), e.to_string()))
    };
    match v {
        Value::String(_) => Ok(Lesson {
            media_content_key: key(v, "")?,
            recognised_seconds: None,
        }),
        Value::Object(o) => {
            if let Some(unknown) = o
                .keys()
                .find(|k| !matches!(k.as_str(), "media_content_key" | "recognised_seconds"))
            {
                return Err((
                    format!(".{unknown}"),
                    format!(
                        "unknown field `{unknown}`, expected `media_content_key` or `recognised_seconds`"
                    ),
                ));
            }
            let media = o
                .get("media_content_key")
                .ok_or_else(|| (".media_content_key".to_owned(), "is required".to_owned()))?;
            let media_content_key = key(media, ".media_content_key")?;
            let recognised_seconds = match o.get("recognised_seconds") {
                None | Some(Value::Null) => None,
                Some(n) => {
                    let whole = n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
                    match whole {
                        Some(s) if (1..=i64::from(MAX_RECOGNISED_SECONDS)).contains(&s) => {
                            Some(s as i32)
                        }
                        _ => {
                            return Err((
                                ".recognised_seconds".to_owned(),
                                format!(
                                    "{n} is not a whole number of seconds from 1 to {MAX_RECOGNISED_SECONDS}; leave it out for the video's duration"
                                ),
                            ))
                        }
                    }
                }
            };
            Ok(Lesson {
                media_content_key,
                recognised_seconds,
            })
        }
        _ => Err((
            String::new(),
            "must be a media content key or {\"media_content_key\", \"recognised_seconds\"}"
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<String> {
        match parse_body(body.as_bytes(), 4.0) {
            Err(ApiError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_minimal_course_gets_every_default() {
        let d = parse_body(br#"{"title":" Safety 101 ","lessons":["m1",{"media_content_key":"m2","recognised_seconds":1800}]}"#, 3.0).unwrap();
        assert_eq!(d.title, "Safety 101");
        assert_eq!(
            d.lessons,
            vec![
                Lesson {
                    media_content_key: "m1".into(),
                    recognised_seconds: None
                },
                Lesson {
                    media_content_key: "m2".into(),
                    recognised_seconds: Some(1800)
                },
            ]
        );
        assert_eq!(d.rules.completion, Completion::default());
        assert_eq!(d.rules.max_playback_rate, 3.0);
        assert_eq!(d.rules.time_zone, "Asia/Seoul");
        assert_eq!(d.rules.refund, Refund::Academy);
        assert_eq!(d.rules.daily_limit_seconds, None);
        assert!(!d.rules.one_player_at_a_time && !d.rules.unlock_in_order);
    }

    #[test]
    fn every_invalid_field_is_named_at_once() {
        let got = fields(
            r#"{"title":"","lessons":["m1","m1",{"media_content_key":"a b"},{"media_content_key":"m3","recognised_seconds":0},7,{"media_content_key":"m4","x":1}],
                "completion":{"lesson_percent":0,"floor_percent":101},"daily_limit_seconds":59,
                "max_playback_rate":4.5,"time_zone":"Mars/Olympus",
                "refund":{"table":[{"below_percent":50,"refund_percent":50},{"below_percent":30,"refund_percent":101}]}}"#,
        );
        assert_eq!(
            got,
            [
                "title",
                "lessons[1]",
                "lessons[2].media_content_key",
                "lessons[3].recognised_seconds",
                "lessons[4]",
                "lessons[5].x",
                "completion.lesson_percent",
                "completion.floor_percent",
                "daily_limit_seconds",
                "max_playback_rate",
                "time_zone",
                "refund.table[1].below_percent",
                "refund.table[1].refund_percent",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_named_and_lessons_are_bounded() {
        assert_eq!(
            fields(r#"{"title":"t","lessons":["m"],"colour":"red","size":2}"#),
            ["colour", "size"],
            "every unknown field"
        );
        assert_eq!(
            fields(r#"{"title":"t","lessons":["m"],"completion":{"speed":1}}"#),
            ["completion.speed"]
        );
        assert_eq!(fields(r#"{"title":"t","lessons":[]}"#), ["lessons"]);
        let many: Vec<String> = (0..501).map(|i| format!("\"m{i}\"")).collect();
        assert_eq!(
            fields(&format!(
                r#"{{"title":"t","lessons":[{}]}}"#,
                many.join(",")
            )),
            ["lessons"]
        );
    }

    #[test]
    fn refund_policies_read_as_written() {
        for (json, rule) in [
            (r#""academy""#, Refund::Academy),
            (r#""none""#, Refund::None),
            (
                r#"{"table":[{"below_percent":10,"refund_percent":90},{"below_percent":50,"refund_percent":40}]}"#,
                Refund::Table(vec![
                    RefundRow {
                        below_percent: 10,
                        refund_percent: 90,
                    },
                    RefundRow {
                        below_percent: 50,
                        refund_percent: 40,
                    },
                ]),
            ),
        ] {
            let d = parse_body(
                format!(r#"{{"title":"t","lessons":["m"],"refund":{json}}}"#).as_bytes(),
                4.0,
            )
            .unwrap();
            assert_eq!(d.rules.refund, rule);
            assert_eq!(serde_json::to_string(&d.rules.refund).unwrap(), json);
        }
        assert_eq!(
            fields(r#"{"title":"t","lessons":["m"],"refund":"lawyer"}"#),
            ["refund"]
        );
    }
}
