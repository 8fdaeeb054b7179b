"""The scikit-learn shape that every attack estimator shares.

An attack's settings are the fields of its ``Config`` dataclass (which validates them). The
estimator takes them as keyword arguments (or one ``Config`` object, for callers that built
one) and stores each one unchanged as an attribute of the same name; as in scikit-learn,
``__init__`` and ``set_params`` check nothing but the names, and ``fit`` checks the values
(``attack.config`` is the validated ``Config`` of the current settings; factories such as
``make_attack`` read it at once, so a bad setting fails before any work starts). Everything learned in ``fit`` ends
with an underscore, so that
``sklearn.utils.validation.check_is_fitted``, ``get_params`` / ``set_params`` and
``sklearn.base.clone`` work as on any scikit-learn estimator.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from forge_secure.errors import ForgeValueError


def _init_signature(config_cls: type) -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


class ConfigEstimator(BaseEstimator):
    """Base of the attack estimators: settings from ``Config``, learned state ``name_``.

    Subclasses set ``Config``, a dataclass whose ``__post_init__`` validates the settings.
    """

    Config: ClassVar[type] = type(None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__ and dataclasses.is_dataclass(cls.Config):
            # scikit-learn reads the settings from the signature of __init__: give each
            # subclass one naming the Config fields (keyword-only), so get_params lists them
            def __init__(self, config: Any = None, **settings: Any) -> None:
                ConfigEstimator._set_settings(self, config, settings)

            __init__.__signature__ = _init_signature(cls.Config)  # type: ignore[attr-defined]
            __init__.__doc__ = f"Settings: the fields of :class:`{cls.Config.__name__}`, or one such object."
            cls.__init__ = __init__  # type: ignore[method-assign]

    def _set_settings(self, config: Any, settings: dict[str, Any]) -> None:
        names = [f.name for f in dataclasses.fields(self.Config)]
        if config is not None:
            if settings:
                raise ForgeValueError("give either a config object or keyword settings, not both", code="attack.settings")
            if not isinstance(config, self.Config):
                raise ForgeValueError(
                    f"config must be a {self.Config.__name__}, got {type(config).__name__}",
                    fix="pass the settings as keywords",
                    code="attack.settings",
                )
            settings = {n: getattr(config, n) for n in names}
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ForgeValueError(
                f"unknown setting(s) {', '.join(unknown)} for {type(self).__name__}",
                fix=f"use: {', '.join(sorted(names)) or '(none)'}",
                code="attack.settings",
            )
        missing = [
            n
            for n, p in _init_signature(self.Config).parameters.items()
            if p.default is inspect.Parameter.empty and n != "self" and n not in settings
        ]
        if missing:
            raise ForgeValueError(
                f"{type(self).__name__} needs the setting(s) {', '.join(missing)}",
                fix=f"pass {', '.join(f'{n}=...' for n in missing)}",
                code="attack.settings",
            )
        defaults = _init_signature(self.Config).parameters
        for n in names:
            default = defaults[n].default
            setattr(self, n, settings.get(n, None if default is inspect.Parameter.empty else default))

    @property
    def config(self) -> Any:
        """The validated settings (a fresh ``Config`` of the current parameters)."""
        return self.Config(**self.get_params(deep=False))

    def _check_settings(self) -> Any:
        """Validate the current settings (the ``Config`` raises a ``ForgeError`` naming the bad one)."""
        return self.config

    def _clear_fitted(self) -> None:
        """Forget what an earlier (or a failed) ``fit`` learned."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)

    def _check_fitted(self, what: str) -> None:
        try:
            check_is_fitted(self)
        except NotFittedError:
            raise ForgeValueError(f"{what} is not fitted", fix="call fit(...) first", code="attack.not_fitted") from None
