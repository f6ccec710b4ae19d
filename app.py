"""Start the web studio: `python app.py [--host 0.0.0.0] [--port 7860] [--workspace DIR] [--auth USER:PASS]`.

This file only reads flags; webapp.ui builds and serves the page.
"""

import argparse
import logging
import sys

from engine.errors import UserError
from webapp.flags import add_media_limit_arguments, add_queue_arguments, apply_media_limits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Face-swap studio web app")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve a network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workspace", default="workspace", help="folder holding the projects (default: ./workspace)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                   help="require sign-in (repeatable); each user sees only their own projects")
    p.add_argument("--auth-file", metavar="FILE", help="USER:PASS lines, one per user ('#' comments)")
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest accepted upload (default: 2048)")
    p.add_argument("--root-path", default=None, help="URL prefix when served behind a proxy, e.g. /studio")
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    add_queue_arguments(p)
    p.add_argument("--worker", choices=["here", "external"], default="here",
                   help="here: jobs run in this process (default); external: `python -m webapp.worker` runs them "
                        "(on this machine or others sharing the workspace and --queue)")
    limits = p.add_argument_group("per-user limits (0 = none)")
    limits.add_argument("--max-jobs-per-user", type=int, default=0, metavar="N", help="queued or running jobs")
    limits.add_argument("--quota-mb", type=int, default=0, metavar="MB",
                        help="disk per user: uploads, face sets, models, renders, exports")
    limits.add_argument("--max-train-minutes", type=float, default=0, metavar="MIN",
                        help="training time one job may add to a model")
    limits.add_argument("--max-iterations", type=int, default=0, metavar="N", help="highest iteration target")
    add_media_limit_arguments(limits)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from webapp.jobs import JobManager, Limits
    from webapp.projects import Workspace
    from webapp.state import Studio
    from webapp.ui import read_credentials, serve

    try:
        credentials = read_credentials(args.auth, args.auth_file)
        if args.max_upload_mb < 1:
            raise UserError("--max-upload-mb must be at least 1")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        for value in (args.max_jobs_per_user, args.quota_mb, args.max_train_minutes, args.max_iterations,
                      args.max_video_frames, args.max_video_pixels, args.max_image_pixels):
            if value < 0:
                raise UserError("limits are 0 (none) or more")
        apply_media_limits(args)
        workspace = Workspace(args.workspace)
        jobs = JobManager(workspace.root / ".studio", worker=args.worker == "here", queue_url=args.queue,
                          worker_timeout=args.worker_timeout,
                          limits=Limits(jobs_per_user=args.max_jobs_per_user, quota_mb=args.quota_mb,
                                        train_minutes=args.max_train_minutes, iterations=args.max_iterations))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    studio = Studio(workspace, jobs, auth=bool(credentials), max_upload_mb=args.max_upload_mb, device=args.device)
    serve(studio, host=args.host, port=args.port, credentials=credentials, root_path=args.root_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
