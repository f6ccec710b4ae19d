"""Where job rows live: SQLite on one box, Redis when several machines share the jobs.

`webapp.jobs.JobManager` keeps every job as a row (owner, project, kind, lane, state, the task and its
arguments, progress, the worker running it, its heartbeat and lease) through one small interface,
`Records`, with two stores:

- `SqliteRecords`: `WORKSPACE/.studio/jobs.db`, nothing to run. Right for one machine (the web server
  and its workers on one box). Not for several: SQLite's locks are not reliable on a network file
  system, so rows shared that way can be corrupted.
- `RedisRecords`: the same rows as Redis hashes, reached over the network by every machine, with the
  conditional updates (claim a queued job, renew a lease, mark a silent worker's job interrupted) done
  inside Redis by one Lua script, so two workers never both win one.

Every write that must not race is `update(id, fields, when=...)`: it changes the row only while the
row still holds `when` (None: the field is empty), atomically, and says whether it did. `NOW` as a
value is the store's own clock (Redis's, for Redis: machines whose clocks disagree still agree on
whose heartbeat is old).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

FIELDS = ("id", "owner", "project", "kind", "lane", "task", "args", "resume", "info", "state", "message", "result",
          "progress", "created", "started", "finished", "priority", "stop", "worker", "version", "heartbeat", "lease")
_INTS = {"id", "priority", "stop", "version"}
_FLOATS = {"created", "started", "finished", "heartbeat"}
ACTIVE = ("queued", "running")
NOW = "$now"  # a value meaning "the store's clock, now"


def open_records(folder: Path, url: str | None = None) -> Records:
    """Redis rows for a redis:// (rediss://, unix://) queue URL, else SQLite in `folder`/jobs.db."""
    if is_redis(url):
        return RedisRecords(url)
    return SqliteRecords(Path(folder) / "jobs.db")


def is_redis(url: str | None) -> bool:
    return bool(url) and url.startswith(("redis://", "rediss://", "unix://"))


class Records(ABC):
    """The job rows' store. Rows are dicts of `FIELDS` (None where empty)."""

    @abstractmethod
    def insert(self, row: dict) -> int:
        """Add a row (without "id"); -> its new id, higher than every earlier one."""

    @abstractmethod
    def get(self, job_id: int) -> dict | None:
        ...

    @abstractmethod
    def newest(self, owner: str, project: str, kind: str) -> dict | None:
        """The newest row of this kind for the project."""

    @abstractmethod
    def active(self, owner: str | None = None, lane: str | None = None) -> list[dict]:
        """Queued and running rows (of an owner, of a lane), oldest first."""

    @abstractmethod
    def listing(self, limit: int) -> list[dict]:
        """The newest rows, newest first."""

    @abstractmethod
    def update(self, job_id: int, fields: dict, when: dict | None = None) -> bool:
        """Set `fields` while the row holds every `when` value; atomic; -> whether it did."""

    @abstractmethod
    def stale(self, lanes: tuple[str, ...], older_than_s: float) -> list[dict]:
        """Running rows of these lanes whose heartbeat is older than `older_than_s` (or missing)."""

    def close(self) -> None:  # noqa: B027 (a default: a store with nothing to release)
        pass


class SqliteRecords(Records):
    """Rows in one SQLite file (WAL: pages read while a worker writes); for one machine."""

    _SCHEMA = """
    create table if not exists jobs (
        id integer primary key autoincrement, owner text not null, project text not null, kind text not null,
        lane text not null, task text, args text, resume text, info text, state text not null, message text,
        result text, progress text, created real, started real, finished real, priority integer default 0,
        stop integer default 0, worker text, version integer default 0, heartbeat real, lease text);
    create index if not exists jobs_key on jobs (owner, project, kind, id);
    create index if not exists jobs_state on jobs (state, lane, priority, id);
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("pragma journal_mode=wal")  # readers (pages) never wait for the worker's writes
        db.execute("pragma synchronous=normal")
        db.executescript(self._SCHEMA)
        have = {r["name"] for r in db.execute("pragma table_info(jobs)")}
        for name, kind in (("heartbeat", "real"), ("lease", "text")):  # a jobs.db of an earlier version
            if name not in have:
                db.execute(f"alter table jobs add column {name} {kind}")
        self._db = db

    def _rows(self, sql: str, args=()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def insert(self, row: dict) -> int:
        names = [f for f in FIELDS if f != "id" and f in row]
        with self._lock:
            cursor = self._db.execute(f"insert into jobs ({','.join(names)}) values ({','.join('?' * len(names))})",
                                      [row[f] for f in names])
            return cursor.lastrowid

    def get(self, job_id: int) -> dict | None:
        rows = self._rows("select * from jobs where id=?", (job_id,))
        return rows[0] if rows else None

    def newest(self, owner: str, project: str, kind: str) -> dict | None:
        rows = self._rows("select * from jobs where owner=? and project=? and kind=? order by id desc limit 1",
                          (owner, project, kind))
        return rows[0] if rows else None

    def active(self, owner: str | None = None, lane: str | None = None) -> list[dict]:
        sql, args = "select * from jobs where state in (?,?)", list(ACTIVE)
        for name, value in (("owner", owner), ("lane", lane)):
            if value is not None:
                sql, args = f"{sql} and {name}=?", [*args, value]
        return self._rows(sql + " order by id", args)

    def listing(self, limit: int) -> list[dict]:
        return self._rows("select * from jobs order by id desc limit ?", (limit,))

    def update(self, job_id: int, fields: dict, when: dict | None = None) -> bool:
        for name in [*fields, *(when or {})]:
            if name not in FIELDS or name == "id":
                raise ValueError(f"no field {name!r}")
        sets = ", ".join(f"{f}=?" for f in fields)
        values = [time.time() if v == NOW else v for v in fields.values()]
        where = "".join(f" and {f} is ?" for f in when or {})
        with self._lock:
            cursor = self._db.execute(f"update jobs set {sets} where id=?{where}",
                                      [*values, job_id, *(when or {}).values()])
            return cursor.rowcount == 1

    def stale(self, lanes: tuple[str, ...], older_than_s: float) -> list[dict]:
        marks = ",".join("?" * len(lanes))
        return self._rows(f"select * from jobs where state='running' and lane in ({marks}) "
                          "and coalesce(heartbeat, 0) < ? order by id", [*lanes, time.time() - older_than_s])

    def close(self) -> None:  # noqa: B027 (a default: a store with nothing to release)
        with self._lock:
            self._db.close()


# KEYS: the job's hash, the set of active ids; ARGV: the id, `when` and `fields` as JSON (strings or null)
_UPDATE_LUA = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
local when = cjson.decode(ARGV[2])
for name, want in pairs(when) do
  local have = redis.call('HGET', key, name)
  if want == cjson.null then
    if have then return 0 end
  elseif have ~= want then
    return 0
  end
end
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local fields = cjson.decode(ARGV[3])
for name, value in pairs(fields) do
  if value == cjson.null then
    redis.call('HDEL', key, name)
  else
    if value == '$now' then value = now end
    redis.call('HSET', key, name, value)
  end
end
local state = fields['state']
if state == 'queued' or state == 'running' then
  redis.call('SADD', KEYS[2], ARGV[1])
elseif state and state ~= cjson.null then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"""


class RedisRecords(Records):
    """Rows as Redis hashes (`studio:job:ID`), the ids of queued and running jobs in a set, the newest id of
    each (owner, project, kind) in a hash; for a studio whose web server and workers run on several machines."""

    def __init__(self, url: str, prefix: str = "studio") -> None:
        try:
            import redis
        except ImportError as err:  # requirements.txt has it; a hand-made environment may not
            from engine.errors import UserError

            raise UserError("--queue redis://...: the redis client is not installed (pip install redis)") from err
        self._redis = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._p = prefix
        self._update = self._redis.register_script(_UPDATE_LUA)

    def _key(self, *parts) -> str:
        return ":".join((self._p, *map(str, parts)))

    @staticmethod
    def _typed(raw: dict) -> dict | None:
        if not raw:
            return None
        row = dict.fromkeys(FIELDS)
        for name, value in raw.items():
            row[name] = int(value) if name in _INTS else float(value) if name in _FLOATS else value
        return row

    @staticmethod
    def _text(value) -> str | None:
        return None if value is None else repr(value) if isinstance(value, float) else str(value)

    def _many(self, ids) -> list[dict]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key("job", job_id))
        return [row for row in map(self._typed, pipe.execute()) if row is not None]

    def insert(self, row: dict) -> int:
        job_id = self._redis.incr(self._key("next-id"))
        values = {f: self._text(row[f]) for f in FIELDS if row.get(f) is not None and f != "id"}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._key("job", job_id), mapping={"id": str(job_id), **values})
        pipe.zadd(self._key("ids"), {str(job_id): job_id})
        if row.get("state") in ACTIVE:
            pipe.sadd(self._key("active"), job_id)
        pipe.hset(self._key("newest"), json.dumps([row["owner"], row["project"], row["kind"]]), job_id)
        pipe.execute()
        return job_id

    def get(self, job_id: int) -> dict | None:
        return self._typed(self._redis.hgetall(self._key("job", job_id)))

    def newest(self, owner: str, project: str, kind: str) -> dict | None:
        job_id = self._redis.hget(self._key("newest"), json.dumps([owner, project, kind]))
        return None if job_id is None else self.get(int(job_id))

    def active(self, owner: str | None = None, lane: str | None = None) -> list[dict]:
        ids = sorted(int(i) for i in self._redis.smembers(self._key("active")))
        return [r for r in self._many(ids) if r["state"] in ACTIVE and (owner is None or r["owner"] == owner)
                and (lane is None or r["lane"] == lane)]

    def listing(self, limit: int) -> list[dict]:
        return self._many(self._redis.zrevrange(self._key("ids"), 0, limit - 1))

    def update(self, job_id: int, fields: dict, when: dict | None = None) -> bool:
        for name in [*fields, *(when or {})]:
            if name not in FIELDS or name == "id":
                raise ValueError(f"no field {name!r}")
        text = {k: self._text(v) for k, v in fields.items()}
        cond = {k: self._text(v) for k, v in (when or {}).items()}
        done = self._update(keys=[self._key("job", job_id), self._key("active")],
                            args=[job_id, json.dumps(cond), json.dumps(text)])
        return bool(done)

    def stale(self, lanes: tuple[str, ...], older_than_s: float) -> list[dict]:
        seconds, micros = self._redis.time()
        limit = seconds + micros / 1e6 - older_than_s
        return [r for r in self.active() if r["state"] == "running" and r["lane"] in lanes
                and (r["heartbeat"] or 0) < limit]

    def close(self) -> None:  # noqa: B027 (a default: a store with nothing to release)
        self._redis.close()
