"""Studies as sweeps: one small sweep file, one command, a store that survives being killed, and a report.

* :mod:`.spec` — the sweep file's schema (``base``, ``axes``, ``cases``, ``exclude``, ``stages``, ``resources``);
  :mod:`.expr` — the tiny expression language of case values (``"${2 * adapter.r}"``); :mod:`.keys` — dotted
  config keys;
* :mod:`.expand` — the plan: axes crossed, exclusions, cases, per-run validation, run ids (config hashes);
* :mod:`.store` — the SQLite store (statuses, atomic claims, heartbeats, metrics, errors, provenance);
* :mod:`.runner` — one run: its stages chained in its directory, output captured, outcome recorded;
* :mod:`.executor` — the local executor, heartbeats, progress, the results-CSV export; :mod:`.ray_executor` — one
  Ray task per run, the driver owning the store;
* :mod:`.command` — ``bayespeft sweep``; :mod:`.report` — ``bayespeft report`` (mean ± t-interval over seeds,
  paired tests, plots, Markdown); :mod:`.literature` — published reference numbers (``literature.yaml``) checked
  against matching runs.

Nothing here is imported by ``import bayespeft``; the CLI imports :mod:`.command` or :mod:`.report` when the
command runs.
"""
