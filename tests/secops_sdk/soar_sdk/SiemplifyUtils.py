"""Output capture and helpers, as the SDK's SiemplifyUtils."""
import functools
import io
import sys
import time
import traceback

# Importing the SDK redirects stdout into a buffer: everything the script prints (and the
# LOGGER logs) ends up in the output object's DebugOutput, not on the real stdout.
real_stdout = sys.stdout
debug_buffer = io.StringIO()
sys.stdout = debug_buffer


def unix_now():
    """Now, in unix milliseconds."""
    return int(time.time() * 1000)


def output_handler(func):
    """An uncaught exception writes the captured stdout to stderr, then the traceback, and
    the process exits non-zero."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException:
            sys.stderr.write("STDOUT:\n" + debug_buffer.getvalue() + "STDERR:\n")
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)

    return wrapper
