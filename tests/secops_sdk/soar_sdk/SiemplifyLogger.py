"""`siemplify.LOGGER`, as the SDK's SiemplifyLogger: every message is printed (so it lands in
the captured stdout, the output object's DebugOutput) and written by a `logging` file handler
configured from ScriptingLogging.config, whose file is the `--logPath` argument. Without it the
configured default file (a platform path) cannot be opened: "LOGGER: Error initializing" and a
traceback on stderr, as on the SDK."""
import json
import logging
import logging.config
import sys
import traceback
from os import path


class SiemplifyLogger:
    DEFAULT_LOGGER_NAME = "siemplify_default_logger"
    DEFAULT_FILE_HANDLER_NAME = "siempify_file_handler"

    def __init__(self, log_path):
        self._log = None
        try:
            with open(path.join(path.dirname(__file__), "ScriptingLogging.config")) as f:
                config = json.load(f)
            handlers = config["handlers"]
            if self.DEFAULT_FILE_HANDLER_NAME in handlers and log_path:
                handlers[self.DEFAULT_FILE_HANDLER_NAME]["filename"] = log_path
            logging.config.dictConfig(config)
            self._log = logging.getLogger(self.DEFAULT_LOGGER_NAME)
        except Exception:
            sys.stderr.write("LOGGER: Error initializing\n")
            traceback.print_exc()

    def _emit(self, level, msg, args):
        text = str(msg) % args if args else str(msg)
        print(text)
        if self._log:
            self._log.log(level, text)

    def info(self, msg, *args, **kwargs):
        self._emit(logging.INFO, msg, args)

    def warn(self, msg, *args, **kwargs):
        self._emit(logging.WARNING, msg, args)

    warning = warn

    def error(self, msg, *args, **kwargs):
        self._emit(logging.ERROR, msg, args)

    def exception(self, e, *args, **kwargs):
        self._emit(logging.ERROR, "ERROR: {}".format(e), ())
