"""Start the web app: `python app.py [--host 0.0.0.0] [--port 7860]`."""

import argparse

from webapp.ui import build_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Face-swap studio web app")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a server)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    build_app().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
