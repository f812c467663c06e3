//! Courses' SQL: a course and its lessons written in one transaction with its access-record row
//! (`course_change`); a course read back; what a user's progress is computed from (the lessons'
//! recognised times, the user's sessions on them: two index reads). Rows by column name.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::{Error, Row};

use super::model::{Completion, Count, Course, Definition, Lesson, Refund, Rules};
use super::progress::{LessonTime, SessionFacts};
use crate::access_log::record::{AccessLog, Action, Entry};

/// Who changes a course, when, from where.
pub struct Change<'a> {
    pub course_id: &'a str,
    pub by: &'a str,
    pub at: OffsetDateTime,
    pub addr: Option<std::net::IpAddr>,
}

impl Change<'_> {
    async fn record(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: &AccessLog,
    ) -> anyhow::Result<()> {
        let target = format!("course:{}", self.course_id);
        log.record(
            tx,
            Entry {
                client_addr: self.addr,
                target: Some(&target),
                ..Entry::new(Action::CourseChange, self.by)
            },
        )
        .await
    }
}

const COLUMNS: &str = "course_id, title, channel_key, lesson_percent, course_percent, count, \
                       floor_percent, unlock_percent, daily_limit_seconds, one_player_at_a_time, \
                       unlock_in_order, max_playback_rate, time_zone, refund, created_at, \
                       changed_at, changed_by";

fn rules(r: &Row) -> anyhow::Result<Rules> {
    let refund: serde_json::Value = r.try_get("refund")?;
    Ok(Rules {
        channel_key: r.try_get("channel_key")?,
        completion: Completion {
            lesson_percent: r.try_get("lesson_percent")?,
            course_percent: r.try_get("course_percent")?,
            count: r.try_get::<_, Count>("count")?,
            floor_percent: r.try_get("floor_percent")?,
            unlock_percent: r.try_get("unlock_percent")?,
        },
        daily_limit_seconds: r.try_get("daily_limit_seconds")?,
        one_player_at_a_time: r.try_get("one_player_at_a_time")?,
        unlock_in_order: r.try_get("unlock_in_order")?,
        max_playback_rate: r.try_get("max_playback_rate")?,
        time_zone: r.try_get("time_zone")?,
        refund: serde_json::from_value::<Refund>(refund)?,
    })
}

/// Creates or replaces a course and its lessons, and records the change; true when created.
pub async fn put(
    client: &mut deadpool_postgres::Client,
    c: &Change<'_>,
    d: &Definition,
    log: &AccessLog,
) -> anyhow::Result<(bool, Course)> {
    let tx = client.transaction().await?;
    let r = &d.rules;
    let refund = serde_json::to_value(&r.refund)?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO courses AS c ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16) \
                 ON CONFLICT (course_id) DO UPDATE SET \
                     title = EXCLUDED.title, channel_key = EXCLUDED.channel_key, \
                     lesson_percent = EXCLUDED.lesson_percent, \
                     course_percent = EXCLUDED.course_percent, count = EXCLUDED.count, \
                     floor_percent = EXCLUDED.floor_percent, \
                     unlock_percent = EXCLUDED.unlock_percent, \
                     daily_limit_seconds = EXCLUDED.daily_limit_seconds, \
                     one_player_at_a_time = EXCLUDED.one_player_at_a_time, \
                     unlock_in_order = EXCLUDED.unlock_in_order, \
                     max_playback_rate = EXCLUDED.max_playback_rate, \
                     time_zone = EXCLUDED.time_zone, refund = EXCLUDED.refund, \
                     changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by \
                 RETURNING (xmax = 0) AS created, {COLUMNS}"
            ),
            &[
                &c.course_id,
                &d.title,
                &r.channel_key,
                &r.completion.lesson_percent,
                &r.completion.course_percent,
                &r.completion.count.as_str(),
                &r.completion.floor_percent,
                &r.completion.unlock_percent,
                &r.daily_limit_seconds,
                &r.one_player_at_a_time,
                &r.unlock_in_order,
                &r.max_playback_rate,
                &r.time_zone,
                &refund,
                &c.at,
                &c.by,
            ],
        )
        .await?;
    tx.execute(
        "DELETE FROM course_lessons WHERE course_id = $1",
        &[&c.course_id],
    )
    .await?;
    let keys: Vec<&str> = d
        .lessons
        .iter()
        .map(|l| l.media_content_key.as_str())
        .collect();
    let seconds: Vec<Option<i32>> = d.lessons.iter().map(|l| l.recognised_seconds).collect();
    tx.execute(
        "INSERT INTO course_lessons (course_id, position, media_content_key, recognised_seconds) \
         SELECT $1, (l.i - 1)::integer, l.key, l.seconds \
           FROM unnest($2::text[], $3::int4[]) WITH ORDINALITY AS l(key, seconds, i)",
        &[&c.course_id, &keys, &seconds],
    )
    .await?;
    let created: bool = row.try_get("created")?;
    let course = Course {
        course_id: row.try_get("course_id")?,
        title: row.try_get("title")?,
        lessons: d.lessons.clone(),
        rules: rules(&row)?,
        created_at: row.try_get("created_at")?,
        changed_at: row.try_get("changed_at")?,
        changed_by: row.try_get("changed_by")?,
    };
    c.record(&tx, log).await?;
    tx.commit().await?;
    Ok((created, course))
}

/// Deletes a course (its lessons with it) and records the change; false when there is none.
/// Course grants stay in `entitlements`, covering nothing.
pub async fn delete(
    client: &mut deadpool_postgres::Client,
    c: &Change<'_>,
    log: &AccessLog,
) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    let deleted = tx
        .execute("DELETE FROM courses WHERE course_id = $1", &[&c.course_id])
        .await?;
    if deleted == 0 {
        return Ok(false);
    }
    c.record(&tx, log).await?;
    tx.commit().await?;
    Ok(true)
}

/// A course with its lessons, or `None`.
pub async fn get(client: &impl GenericClient, course_id: &str) -> anyhow::Result<Option<Course>> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM courses WHERE course_id = $1"),
            &[&course_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let lessons = client
        .query(
            "SELECT media_content_key, recognised_seconds FROM course_lessons \
             WHERE course_id = $1 ORDER BY position",
            &[&course_id],
        )
        .await?
        .iter()
        .map(|l| {
            Ok(Lesson {
                media_content_key: l.try_get("media_content_key")?,
                recognised_seconds: l.try_get("recognised_seconds")?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Some(Course {
        course_id: row.try_get("course_id")?,
        title: row.try_get("title")?,
        lessons,
        rules: rules(&row)?,
        created_at: row.try_get("created_at")?,
        changed_at: row.try_get("changed_at")?,
        changed_by: row.try_get("changed_by")?,
    }))
}

/// Each lesson's recognised time as the course and the catalog give it, in course order: the
/// time given, else the catalog's duration (`uploads.duration_seconds`, from Kollus's API); 0 when
/// neither (`progress` then takes the user's own reports' duration). One index read per lesson.
const LESSON_TIMES: &str = "
SELECT l.media_content_key,
       l.recognised_seconds::bigint AS given,
       u.duration_seconds::bigint AS catalog
  FROM course_lessons l
  LEFT JOIN media_contents m ON m.media_content_key = l.media_content_key
  LEFT JOIN uploads u ON u.upload_file_key = m.upload_file_key
 WHERE l.course_id = $1
 ORDER BY l.position";

pub async fn lesson_times(
    client: &impl GenericClient,
    course_id: &str,
) -> Result<Vec<LessonTime>, Error> {
    let statement = client.prepare_cached(LESSON_TIMES).await?;
    client
        .query(&statement, &[&course_id])
        .await?
        .iter()
        .map(|r| {
            let given: Option<i64> = r.try_get("given")?;
            let catalog: Option<i64> = r.try_get::<_, Option<i64>>("catalog")?.filter(|s| *s > 0);
            let (seconds, source) = match (given, catalog) {
                (Some(s), _) => (s, "given"),
                (None, Some(s)) => (s, "catalog"),
                (None, None) => (0, "unknown"),
            };
            Ok(LessonTime {
                media_content_key: r.try_get("media_content_key")?,
                seconds,
                source,
            })
        })
        .collect()
}

/// The user's sessions on the course's lessons (primary-key range reads, one per lesson).
const SESSIONS: &str = "
SELECT w.media_content_key, w.start_at, w.showtime, w.playtime, w.block_count, w.blocks_played,
       w.last_report_at, w.duration, w.bound
  FROM course_lessons l
  JOIN watch_sessions w ON w.client_user_id = $1 AND w.media_content_key = l.media_content_key
 WHERE l.course_id = $2";

pub async fn sessions(
    client: &impl GenericClient,
    user: &str,
    course_id: &str,
) -> Result<Vec<SessionFacts>, Error> {
    let statement = client.prepare_cached(SESSIONS).await?;
    client
        .query(&statement, &[&user, &course_id])
        .await?
        .iter()
        .map(session)
        .collect()
}

pub fn session(r: &Row) -> Result<SessionFacts, Error> {
    Ok(SessionFacts {
        media_content_key: r.try_get("media_content_key")?,
        start_at: r.try_get("start_at")?,
        showtime: r.try_get("showtime")?,
        playtime: r.try_get("playtime")?,
        block_count: r.try_get("block_count")?,
        blocks_played: r.try_get("blocks_played")?,
        last_report_at: r.try_get("last_report_at")?,
        duration: r.try_get("duration")?,
        bound: r.try_get("bound")?,
    })
}

/// Whether an entitlement enrols the user: a course grant, or a channel grant for the course's
/// channel, in force at `now`.
pub async fn enrolled(
    client: &impl GenericClient,
    user: &str,
    course: &Course,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM entitlements e \
                WHERE e.client_user_id = $1 AND e.revoked_at IS NULL \
                  AND (e.expires_at IS NULL OR e.expires_at > $4) \
                  AND ((e.scope = 'course' AND e.target = $2) \
                    OR (e.scope = 'channel' AND e.target = $3)))",
            &[&user, &course.course_id, &course.rules.channel_key, &now],
        )
        .await?;
    row.try_get(0)
}
