"""A stand-in for the SecOps SOAR SDK (`soar_sdk`), written from soarjobd's
`specs/secops-sdk-launch.md` for tests: the launch contract (argv, stdin context, APP_* env),
the wire (AppKey header, endpoint paths, context properties) and the output object, exactly
as the spec describes them. Standard library only (urllib)."""
