"""The limit of this stack: a WSGI app that reads the poll's body and returns stored bytes, nothing else.

Served by `python -m bench.bare_app DIR PORT` under exactly the gunicorn
options of `python -m eds_server` (same worker class, workers, keep-alive).
`POST /304` answers 304; `POST /NAME` answers 200 with the bytes of DIR/NAME.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gunicorn.app.base import BaseApplication

from eds_server.serving.gunicorn_options import gunicorn_options
from eds_server.settings import Settings


def bare_app(answers: dict[str, bytes]):
    def app(environ, start_response):
        environ["wsgi.input"].read()
        body = answers.get(environ["PATH_INFO"])
        if body is None:
            start_response("304 Not Modified", [])
            return [b""]
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class BareServer(BaseApplication):
    def __init__(self, settings: Settings, answers: dict[str, bytes]):
        self.options = gunicorn_options(settings)
        self.answers = answers
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return bare_app(self.answers)


if __name__ == "__main__":
    directory, port, workers, access_log = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    answers = {f"/{path.name}": path.read_bytes() for path in directory.iterdir()}
    settings = Settings(host="127.0.0.1", port=port, workers=workers, access_log=access_log == "true")
    BareServer(settings, answers).run()
