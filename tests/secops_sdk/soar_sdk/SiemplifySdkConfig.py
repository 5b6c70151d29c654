"""Where the API is: APP_IP, APP_PORT, APP_USE_SSL (a Python literal); the run folder from
sdk_config.ini (`runFolderPath`), as the SDK reads it."""
import ast
import configparser
import os


class SiemplifySdkConfig:
    config_file_path = os.path.join(os.path.dirname(__file__), "sdk_config.ini")

    def __init__(self):
        config = configparser.ConfigParser()
        config.read(self.config_file_path)
        ip = os.environ.get("APP_IP", "localhost")
        port = os.environ.get("APP_PORT", "8443")
        use_ssl = ast.literal_eval(os.environ.get("APP_USE_SSL", "True"))
        scheme = "https" if use_ssl else "http"
        self.api_root = "{}://{}:{}/api".format(scheme, ip, port)
        self.run_folder_path = config.get("ExecutionConfig", "runFolderPath")
