"""Pictures of a run: the callback that logs them to MLflow (``callback``) and the plots it draws
(``plots``). Import from the submodules: the callback imports torch and Lightning, which a sweep's
or repeat's summary drawing with ``plots.sweep``, training nothing, never pays."""
