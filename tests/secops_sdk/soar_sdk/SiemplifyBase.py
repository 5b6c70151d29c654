"""The session and the context properties, as the SDK's SiemplifyBase."""
import getopt
import json
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import SiemplifyLogger
import SiemplifyUtils
from SiemplifySdkConfig import SiemplifySdkConfig

CONTEXT_JOB = 3
MAX_CONTEXT_LENGTH = 3000000


class MaximumContextLengthException(Exception):
    pass


def _on_sigterm(signum, frame):
    sys.exit(-143)


class SiemplifyBase:
    def __init__(self):
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        config = SiemplifySdkConfig()
        self.API_ROOT = config.api_root
        self.RUN_FOLDER = config.run_folder_path
        self._log_path = None
        self._logger = None
        options, args = getopt.gnu_getopt(
            sys.argv[1:], "",
            ["useElastic", "logPath=", "correlationId=", "traceId=", "baggage=",
             "onePlatformSupport"],
        )
        for name, value in options:
            if name == "--logPath":
                self._log_path = value.strip('"')
        self.api_key = sys.argv[1] if len(sys.argv) > 1 else None
        self.script_name = ""

    @property
    def LOGGER(self):
        if self._logger is None:
            self._logger = SiemplifyLogger.SiemplifyLogger(self._log_path)
        return self._logger

    @property
    def run_folder(self):
        """`<RUN_FOLDER>/<class name>/<script name>`, created on first use."""
        if not self.script_name:
            raise Exception("Cannot build run_folder when script_name has not been defined first.")
        folder = os.path.join(self.RUN_FOLDER, self.__class__.__name__, self.script_name)
        if not os.path.exists(folder):
            os.makedirs(folder)
        return folder

    @property
    def platform_url(self):
        url = os.environ.get("CLIENT_ADDRESS")
        if not url:
            raise Exception("Environment CLIENT_ADDRESS not found")
        if not url.startswith("http"):
            url = "https://" + url
        parsed = urllib.parse.urlparse(url)
        return "{}://{}/".format(parsed.scheme, parsed.netloc)

    def get_configuration_from_server(self, integration_instance, provider):
        identifier = integration_instance if integration_instance else provider
        return self._request(
            "GET", "external/v1/sdk/configuration/{}".format(urllib.parse.quote(identifier, safe="")))

    def get_configuration(self, provider, environment=None, integration_instance=None):
        return self.get_configuration_from_server(integration_instance, provider)

    def get_configuration_by_provider(self, identifier):
        return self.get_configuration_from_server(None, identifier)

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
