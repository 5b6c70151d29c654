"""The session and the context properties, as the SDK's SiemplifyBase."""
import json
import signal
import sys
import urllib.error
import urllib.request

from soar_sdk import SiemplifyUtils
from soar_sdk.SiemplifySdkConfig import SiemplifySdkConfig

CONTEXT_JOB = 3
MAX_CONTEXT_LENGTH = 3000000


class MaximumContextLengthException(Exception):
    pass


class Logger:
    """`siemplify.LOGGER`: lines into the captured stdout (DebugOutput)."""

    def info(self, msg, *args):
        print(str(msg) % args if args else str(msg))

    def warn(self, msg, *args):
        self.info(msg, *args)

    warning = warn

    def error(self, msg, *args):
        self.info(msg, *args)

    def exception(self, e):
        print("ERROR: {}".format(e))


def _on_sigterm(signum, frame):
    sys.exit(-143)


class SiemplifyBase:
    def __init__(self):
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.API_ROOT = SiemplifySdkConfig().api_root
        self.api_key = sys.argv[1] if len(sys.argv) > 1 else None
        self.LOGGER = Logger()
        self.script_name = ""

    def _url(self, path):
        return "{}/{}".format(self.API_ROOT, path)

    def _request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self._url(path), data=data, method=method)
        req.add_header("AppKey", self.api_key or "")
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                if resp.status == 204 or not raw:
                    return None
                return json.loads(raw.decode("utf-8"))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            raise Exception("{}: {}".format(e, body))

    # Context properties (job state).
    def get_context_property(self, context_type, identifier, property_key):
        body = {"ContextType": context_type, "Identifier": identifier, "PropertyKey": property_key}
        return self._request("POST", "external/v1/sdk/GetContextProperty", body)

    def set_context_property(self, context_type, identifier, property_key, property_value):
        if len(str(property_value)) > MAX_CONTEXT_LENGTH:
            raise MaximumContextLengthException("context value too long")
        body = {
            "ContextType": context_type,
            "Identifier": identifier,
            "PropertyKey": property_key,
            "PropertyValue": property_value,
        }
        return self._request("POST", "external/v1/sdk/SetContextProperty", body)

    def try_set_context_property(self, context_type, identifier, property_key, property_value):
        body = {
            "ContextType": context_type,
            "Identifier": identifier,
            "PropertyKey": property_key,
            "PropertyValue": property_value,
        }
        return self._request("POST", "external/v1/sdk/TrySetContextProperty", body)
