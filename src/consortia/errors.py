"""The consortia exception hierarchy, drawn in one place.

Every error consortia raises on purpose derives from :class:`ConsortiaError`.
Third-party errors (numpy, cryptography, httpx, SQLAlchemy) are translated into
these at the boundary where they occur, so callers only ever need to catch the
classes below.  Messages name the parameter, column or rule that was broken and
never contain a patient-level value.
"""

from __future__ import annotations


class ConsortiaError(Exception):
    """Base class of every error raised by consortia."""


class ValidationError(ConsortiaError, ValueError):
    """Bad input: a parameter, a column or a file breaks a documented rule."""


class SchemaError(ValidationError):
    """A dataset does not match its declared schema (missing column, wrong type, ...)."""


class TargetTableError(SchemaError):
    """A target and drug knowledge table breaks its documented format (``docs/targets.md``).

    Parameters
    ----------
    message
        The rule that was broken.
    row
        The 1-based data row (the header is not counted); ``None`` for the whole table.
    column
        The column concerned, when one is.
    source
        Where the table came from (a path, or ``"<frame>"``).
    """

    def __init__(
        self, message: str, *, row: int | None = None, column: str | None = None, source: str = ""
    ) -> None:
        self.row = row
        self.column = column
        self.source = source
        where = [f"targets table {source}".rstrip()]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")


class AlgorithmError(ConsortiaError):
    """An algorithm was misused or could not produce a result."""


class UnknownAlgorithmError(AlgorithmError, KeyError):
    """No algorithm is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AlgorithmEntryPointWarning(UserWarning):
    """An entry point of the ``consortia.algorithms`` group failed to load.

    The warning names the entry point and its distribution; the algorithms it would
    have registered are unavailable, every other algorithm is not affected.
    """


class ConvergenceError(AlgorithmError):
    """An iterative algorithm did not converge within its round budget."""


class LocalStepError(AlgorithmError):
    """A site's local step failed unexpectedly: out of memory, a defect, bad public arrays.

    The site reports it as a refusal; its process lives on.  The message names the
    step, the algorithm and the class of the original exception only: never that
    exception's message, which may hold patient values.

    Parameters
    ----------
    step
        The step that failed.
    cause
        The class name of the original exception (``"MemoryError"`` for any
        out-of-memory error, numpy's included).
    algorithm
        The algorithm's registered name, when known.
    """

    def __init__(self, step: str, cause: str, *, algorithm: str | None = None) -> None:
        self.step = step
        self.cause = cause
        self.algorithm = algorithm
        what = f" of {algorithm!r}" if algorithm else ""
        hint = ": the step needs more memory than the site has" if cause == "MemoryError" else ""
        super().__init__(f"the local step {step[:100]!r}{what} failed at the site ({cause}){hint}")


class UnknownModelError(ValidationError):
    """No model is registered under the requested name (see :mod:`consortia.learn.models`)."""


class HyperparameterError(ValidationError):
    """A model's or a strategy's hyperparameter is unknown, of the wrong type or out of range."""


class TrainingError(AlgorithmError):
    """Federated model training could not go on (see :mod:`consortia.learn`)."""


class TrainingDivergedError(TrainingError, ConvergenceError):
    """Training diverged: a NaN or infinite loss at a site, or a server step that blew up.

    Nothing already released is lost: the rounds summed before stay in the study's history.
    """


class SplitClassError(TrainingError):
    """A site's training split holds a single class of a binary outcome."""


class ProtocolError(ConsortiaError):
    """A message breaks the federation protocol (wrong layout, round, study, ...)."""


class HubUnreachable(ProtocolError):
    """The hub could not be reached (network error, or the hub is restarting)."""


class ResultCodecError(ProtocolError):
    """A study result could not be encoded or decoded (see :mod:`consortia.resultcodec`).

    Parameters
    ----------
    message
        What was wrong, naming the rule that was broken.
    path
        Where in the result: ``"result.curves['a'].timeline"`` style (``""``: the frame).
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ResultMismatch(ProtocolError):
    """A stored study result differs from the one replayed from the round sums."""


class PrivacyError(ConsortiaError):
    """The privacy layer refused an operation (encoding range, key check, replay)."""


class EncodingRangeError(PrivacyError, ValidationError):
    """A value is outside the range the fixed-point encoding can represent."""


class KeyVerificationError(PrivacyError):
    """A peer's masking key does not carry a valid signature from its identity."""


class SecureAggregationError(PrivacyError):
    """A secure-aggregation rule was broken (late reveal, replayed attempt, ...)."""


class SecretSharingError(SecureAggregationError):
    """Secret shares could not be made or combined (too few, duplicated, inconsistent)."""


class PolicyError(ConsortiaError):
    """A node's disclosure policy refused to release a contribution.

    Parameters
    ----------
    rule
        The name of the policy rule that was broken (for example
        ``"min_cohort_size"``).  The offending value is never included.
    message
        A human-readable explanation naming the rule and its threshold.
    site
        The site whose policy refused, when known.
    """

    def __init__(self, rule: str, message: str, *, site: str | None = None) -> None:
        self.rule = rule
        self.detail = message
        self.site = site
        prefix = f"site {site!r}: " if site else ""
        super().__init__(f"{prefix}policy rule {rule!r} refused the release: {message}")

    def with_site(self, site: str) -> PolicyError:
        """Return a copy of this error attributed to ``site``."""
        return PolicyError(self.rule, self.detail, site=site)


class AuditError(ConsortiaError):
    """The audit log could not be written or read (missing head record, persistent lock)."""


class MigrationError(ConsortiaError):
    """A database cannot be brought to the schema of this release (newer, or not consortia's)."""


class AuthenticationError(ConsortiaError):
    """A known credential was refused: the token expired or was revoked (answered 401)."""


class SiteFailure(ConsortiaError):
    """A site failed to answer a round (crash, timeout, network error)."""

    def __init__(self, site: str, reason: str = "no answer") -> None:
        self.site = site
        super().__init__(f"site {site!r} failed: {reason}")


class StudyFailed(ConsortiaError):
    """A study could not be completed; the message gives the reason."""
