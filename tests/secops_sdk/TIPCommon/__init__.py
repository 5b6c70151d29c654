"""A stand-in for TIPCommon (the content hub's shared library for SecOps integrations), written
from its public interface for soarjobd's tests: parameter extraction (`extraction`) and the
`Job` base class (`base.job`). Standard library only; the SOAR SDK it wraps is the stand-in
`soar_sdk` next to it."""

__version__ = "2.0.0+standin"

from .extraction import extract_configuration_param, extract_job_param  # noqa: F401
