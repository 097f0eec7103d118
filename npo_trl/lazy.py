"""A package's names imported on first use, as TRL and transformers do: its `__init__` says which submodule holds each
name, so that importing the package (or one light submodule, e.g. `npo_trl.losses`) imports nothing heavy."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """(`__getattr__`, `__dir__`) for the package named `package`, whose names `exports` maps to their submodules."""

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{exports[name]}", package), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
