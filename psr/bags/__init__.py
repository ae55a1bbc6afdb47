r"""The bags world (docs/bags.md): a second embedded world, built so that checking a step is easier
than producing it. Items must be paired so that each pair adds up to a target; the answer is the
item left over. Same contract as :mod:`psr.arith` (seeded problems, an exact step checker,
templated + policy-sampled EFT, a tokenizer and a ~1M model), reusing its machinery.

Modules: problems, checker, candidates, teacher, data, model, diagnostics
(``python -m psr.bags --help``).
"""
