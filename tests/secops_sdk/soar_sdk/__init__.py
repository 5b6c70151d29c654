"""A stand-in for the SecOps SOAR SDK (`soar_sdk`), written from soarjobd's
`specs/secops-sdk-launch.md` and the SDK's public interface, for tests: the launch contract
(argv with GNU options, stdin context, APP_* env), the wire (AppKey header, endpoint paths,
context properties, integration configuration), the logger (`--logPath`) and the output object.
Standard library only (urllib).

As the SDK, its modules import each other by top-level name (`import SiemplifyLogger`), so its
own folder must be on `sys.path`: this package puts it there on import, as the current SDK's
`__init__` does."""
import sys
from pathlib import Path

_sdk_path = str(Path(__file__).parent.resolve())
if _sdk_path not in sys.path:
    sys.path.insert(0, _sdk_path)

# One module object per SDK module, whichever name imports it (`soar_sdk.SiemplifyUtils` and
# `SiemplifyUtils`): the stdout capture happens once.
for _name in ["SiemplifyUtils", "SiemplifyLogger", "SiemplifySdkConfig", "SiemplifyBase",
              "SiemplifyJob"]:
    sys.modules[_name] = __import__("soar_sdk." + _name, fromlist=[_name])
