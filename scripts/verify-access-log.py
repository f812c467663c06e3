#!/usr/bin/env python3
"""An independent check of the access record's chain (README "The access record").

token-api verifies its own chain (`token-api access-log verify`). This is a second
implementation, in another language, from the documented encoding alone (token-api/src/
access_log/seal.rs): an auditor can run it without trusting our binary. It reads the log
through `psql` and recomputes every seal with Python's own HMAC-SHA256 and JSON:

    mac = HMAC-SHA256(key, prev_mac || canonical(row, prev_id))
    canonical = compact JSON of [id, class, at (unix us), action, key_name, session_hash (hex),
                client_addr (inet text), subject_tag, subject_generation, subject_sealed (hex),
                target, reason, count, prev_id]

prev_mac is the previous seal's mac, an anchor's (retention), or 32 zero bytes. It checks the
macs, the links and that every row is sealed; the daily heads and forks are token-api's verify's.

    DATABASE_URL=postgres://... ACCESS_LOG_KEY_FILE=/path/key python3 scripts/verify-access-log.py

Exit 0: every row verified; 1: the first row that does not, named; 2: cannot run.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

QUERY = """
SELECT json_build_object(
  'id', l.id, 'class', l.class, 'at_us', (extract(epoch FROM l.at) * 1000000)::bigint,
  'action', l.action, 'key_name', l.key_name, 'session_hash', encode(l.session_hash, 'hex'),
  'client_addr', l.client_addr::text, 'subject_tag', l.subject_tag,
  'subject_generation', l.subject_generation, 'subject_sealed', encode(l.subject_sealed, 'hex'),
  'target', l.target, 'reason', l.reason, 'count', l.count,
  'sealed', s.log_id IS NOT NULL, 'prev_id', s.prev_id, 'mac', encode(s.mac, 'hex'))
  FROM access_log l
  LEFT JOIN access_log_seals s ON s.class = l.class AND s.log_id = l.id
 ORDER BY l.class, l.id
"""
ANCHORS = "SELECT json_build_object('class', class, 'id', log_id, 'mac', encode(mac, 'hex')) FROM access_log_anchors"


def rows(url, query):
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", query],
        check=True, capture_output=True, text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def canonical(r):
    return json.dumps(
        [r["id"], r["class"], r["at_us"], r["action"], r["key_name"], r["session_hash"],
         r["client_addr"], r["subject_tag"], r["subject_generation"], r["subject_sealed"],
         r["target"], r["reason"], r["count"], r["prev_id"]],
        separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")


def main():
    url, key_file = os.environ.get("DATABASE_URL"), os.environ.get("ACCESS_LOG_KEY_FILE")
    if not url or not key_file:
        print("set DATABASE_URL and ACCESS_LOG_KEY_FILE", file=sys.stderr)
        return 2
    key = base64.b64decode(open(key_file).read().strip(), validate=True)
    if len(key) != 32:
        print("ACCESS_LOG_KEY_FILE does not hold 32 bytes of base64", file=sys.stderr)
        return 2
    try:
        log, anchors = rows(url, QUERY), rows(url, ANCHORS)
    except subprocess.CalledProcessError as e:
        print(f"psql failed: {e.stderr.strip()}", file=sys.stderr)
        return 2
    macs = {(a["class"], a["id"]): bytes.fromhex(a["mac"]) for a in anchors}
    macs.update({(r["class"], r["id"]): bytes.fromhex(r["mac"]) for r in log if r["sealed"]})
    for r in log:
        where = f"{r['class']} row {r['id']}"
        if not r["sealed"]:
            print(f"broken: {where} has no seal")
            return 1
        if r["prev_id"] is None:
            prev = bytes(32)
        elif (r["class"], r["prev_id"]) in macs:
            prev = macs[(r["class"], r["prev_id"])]
        else:
            print(f"broken: {where} names row {r['prev_id']} before it, which is gone")
            return 1
        mac = hmac.new(key, prev + canonical(r), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, bytes.fromhex(r["mac"])):
            print(f"broken: {where} does not match its seal (altered or reordered)")
            print(f"  encoded as: {canonical(r).decode()}", file=sys.stderr)
            return 1
    print(f"ok: {len(log)} rows verified ({len(anchors)} anchors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
