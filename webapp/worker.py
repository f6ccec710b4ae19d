"""`python -m webapp.worker`: run the studio's jobs in their own process, here or on a GPU box.

    python -m webapp.worker --workspace /srv/studio                   # both lanes, the workspace's SQLite queue
    python -m webapp.worker --workspace /srv/studio --lanes train --queue redis://queue-host:6379/0 --name gpu1
    python -m webapp.worker --workspace /srv/studio list              # the newest jobs of every user
    python -m webapp.worker --workspace /srv/studio cancel 42         # the operator stops any job
    python -m webapp.worker --workspace /srv/studio ping              # is a worker answering? (media lane)

The web server then runs with `--worker external` (and the same `--queue`). Each worker has a name
(default: the host name); when it starts it marks the jobs it was running when it died as
interrupted and queues trainings again from their last save. Run one worker per lane per queue: a
lane's one-at-a-time promise (one training on a GPU) holds per worker.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    from webapp.flags import add_media_limit_arguments, add_queue_arguments, apply_media_limits
    from webapp.jobs import DONE, LANES, JobManager, Task, ping
    from webapp.projects import Workspace

    p = argparse.ArgumentParser(prog="python -m webapp.worker", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default="workspace", help="the web server's --workspace (default: ./workspace)")
    add_queue_arguments(p)
    p.add_argument("--lanes", default=",".join(LANES), help="lanes this worker runs (default: %(default)s)")
    p.add_argument("--name", default=f"{socket.gethostname()}:worker",
                   help="this worker's name, kept on the jobs it runs (default: %(default)s)")
    add_media_limit_arguments(p, shown=False)
    p.add_argument("action", nargs="?", choices=["run", "list", "cancel", "ping"], default="run")
    p.add_argument("job", nargs="?", type=int, help="the job id to cancel")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lanes = tuple(lane for lane in args.lanes.split(",") if lane)
    if not set(lanes) <= set(LANES):
        p.error(f"--lanes: choose from {', '.join(LANES)}")
    root = Workspace(args.workspace).root / ".studio"
    if args.action != "run":
        jobs = JobManager(root, worker=False, queue_url=args.queue)
        try:
            if args.action == "ping":
                import time

                job = jobs.submit("operator", "ping", f"ping-{time.time():.0f}", Task(ping, {"sent": time.time()}))
                deadline = time.time() + 60
                while time.time() < deadline and (job := jobs.get(job.id)).active:
                    time.sleep(0.2)
                if job.state != DONE:
                    jobs.cancel(job.id)
                    print(f"no worker answered within 60 s (job {job.id} {job.state}): start `python -m "
                          "webapp.worker` (or app.py with --worker here)")
                    return 1
                print(f"a worker answered: queued to running in {job.result:.2f} s")
                return 0
            if args.action == "list":
                for row in jobs.listing():
                    print(f"{row['id']:>6}  {row['state']:<11} {row['lane']:<5} {row['owner']}/{row['project']} "
                          f"{row['kind']}  {row['message'] or ''}")
                return 0
            if args.job is None:
                p.error("cancel: which job? (see `list`)")
            ok = jobs.cancel(args.job)
            print(f"job {args.job}: " + ("stop asked (a running training saves first)" if ok else "not active"))
            return 0 if ok else 1
        finally:
            jobs.shutdown(timeout=1)
    apply_media_limits(args)
    jobs = JobManager(root, lanes=lanes, worker=True, queue_url=args.queue, worker_name=args.name,
                      worker_timeout=args.worker_timeout)
    stopping = []

    def stop(signum, frame) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    logging.getLogger(__name__).info("worker %s runs lanes %s of %s", args.name, ",".join(lanes), root)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        jobs.shutdown(timeout=120)  # running jobs stop (trainings save); queued ones wait for the next worker
    return 0


if __name__ == "__main__":
    sys.exit(main())
