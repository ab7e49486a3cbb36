"""labkit: the shared package of the semantic image synthesis course.

Every chapter starts with ``device = labkit.setup(seed=...)`` and then calls
the pieces it needs: :mod:`labkit.data` (StreetScenes and real-data loaders),
:mod:`labkit.judge` and :mod:`labkit.metrics` (evaluation),
:mod:`labkit.features` (perceptual-loss features), :mod:`labkit.train`
(profiles, checkpoints, the training loop), :mod:`labkit.plotting`, and one
module per paper under :mod:`labkit.papers`.
"""
__version__ = "0.1.0"

from .train import PROFILE_NAMES, select_profile, setup  # noqa: E402


def show_source(obj) -> None:
    """Display the source code of a labkit function or class in a notebook,
    so a chapter can show the real code instead of a copy of it."""
    import inspect

    from IPython.display import Code, display

    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as error:
        raise ValueError(f"obj must be a function, class or method defined in a source file, got {obj!r} "
                         f"({error})") from None
    display(Code(source, language="python"))


__all__ = ["PROFILE_NAMES", "select_profile", "setup", "show_source", "__version__"]
