"""One module per paper, in course order: ``crn``, ``sims``, ``srn``, ``semia``, ``seigan``.

Each module states the paper's equations in its docstrings, declares its
``PROFILES`` (smoke / book / full) in one place, and keeps a "Deviations" list
of everything that differs from the paper: scale, data, loss weights, and
where the official code and the paper disagree.
"""
