"""Where the API is: APP_IP, APP_PORT, APP_USE_SSL (a Python literal)."""
import ast
import os


class SiemplifySdkConfig:
    def __init__(self):
        ip = os.environ.get("APP_IP", "localhost")
        port = os.environ.get("APP_PORT", "8443")
        use_ssl = ast.literal_eval(os.environ.get("APP_USE_SSL", "True"))
        scheme = "https" if use_ssl else "http"
        self.api_root = "{}://{}:{}/api".format(scheme, ip, port)
