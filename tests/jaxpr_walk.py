"""Walking a jaxpr with its sub-jaxprs (scan, pjit, custom_vjp bodies), for tests that
inspect what a traced program does."""


def all_eqns(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from all_eqns(inner)
