"""The exceptions of ``mlmatvamp``: one class per error of the Rust core (``mlmatvamp::Error``).

Every exception derives from :class:`MlmatvampError`. Errors about inputs also derive from
:class:`ValueError` (as numpy and scipy raise for bad values and shapes), numerical failures
during a run from :class:`RuntimeError`. The core's message is the exception's text; its
structured fields are attributes (``what``, ``expected``, ``got``, ``location``,
``iteration``, ``detail``, ``path``), ``None`` where the core gives none.

Hierarchy::

    MlmatvampError (Exception)
    ├── InputError (ValueError)            a bad argument
    │   ├── ShapeError                     a matrix of the wrong shape
    │   ├── NonFiniteError                 NaN or an infinity in an input
    │   ├── NotSymmetricError              a precision/covariance that is not symmetric
    │   ├── NotPositiveDefiniteError       ... or not positive definite
    │   └── InvalidArgumentError           any other invalid option or value
    ├── ConfigurationError (ValueError)    a configuration file (unknown key, bad value, ...)
    │   └── DataFileError                  an array file it names that cannot be used
    ├── NumericalError (RuntimeError)      a numerical routine failed
    │   └── DivergenceError                a message turned non-finite during the iterations
    └── StoppedError                       an experiment stopped by its callback

Files that cannot be read raise :class:`OSError` (``FileNotFoundError``, ...), with the file
name; wrong argument types (complex or object arrays, ...) raise :class:`TypeError`.
"""

from typing import Optional

__all__ = [
    "MlmatvampError",
    "InputError",
    "ShapeError",
    "NonFiniteError",
    "NotSymmetricError",
    "NotPositiveDefiniteError",
    "InvalidArgumentError",
    "ConfigurationError",
    "DataFileError",
    "NumericalError",
    "DivergenceError",
    "StoppedError",
]


class MlmatvampError(Exception):
    """Base class of every error raised by the Rust core."""

    what: Optional[str] = None
    detail: Optional[str] = None


class InputError(MlmatvampError, ValueError):
    """An argument that the core rejects (base class of the input errors)."""


class ShapeError(InputError):
    """A matrix has the wrong shape. Attributes: ``what``, ``expected``, ``got``."""

    expected: Optional[str] = None
    got: Optional[str] = None


class NonFiniteError(InputError):
    """An input contains NaN or an infinity. Attributes: ``what``, ``detail``."""


class NotSymmetricError(InputError):
    """A matrix that must be symmetric is not. Attributes: ``what``, ``detail``."""


class NotPositiveDefiniteError(InputError):
    """A covariance or precision is not positive definite. Attributes: ``what``, ``detail``."""


class InvalidArgumentError(InputError):
    """An invalid option or value. Attributes: ``what``, ``detail``."""


class ConfigurationError(MlmatvampError, ValueError):
    """A problem in a configuration file. Attributes: ``path``, ``detail``."""

    path: Optional[str] = None


class DataFileError(ConfigurationError):
    """An array file named by a configuration has an unusable content. Attributes: ``path``,
    ``detail``."""


class NumericalError(MlmatvampError, RuntimeError):
    """A numerical routine failed. Attributes: ``what``, ``detail``."""


class DivergenceError(NumericalError):
    """A message or estimate turned non-finite during the iterations. Attributes:
    ``location`` (layer and direction), ``iteration`` (0-based), ``detail``."""

    location: Optional[str] = None
    iteration: Optional[int] = None


class StoppedError(MlmatvampError):
    """An experiment was stopped by its callback before it finished (no partial result).
    Attribute: ``what``."""
