"""The sandbox farm: warm workers that run untrusted ML code safely and fast."""

from sandmle.sandbox.farm import SandboxFarm
from sandmle.sandbox.job import Job, JobError, Limits, Result, STATUSES

__all__ = ["SandboxFarm", "Job", "JobError", "Limits", "Result", "STATUSES"]
