"""The application layer: everything that turns a validated config into a run, one module per command.

* :mod:`.run`: what every command shares (``build`` the objects of a config, ``start_run``, ``record_predictive``,
  ``evaluate_map``, ``load_checkpoint_into``);
* :mod:`.train` (``bayespeft train``), :mod:`.evaluate` (``bayespeft evaluate``), :mod:`.laplace`
  (``bayespeft laplace``), :mod:`.sample` (``bayespeft sample`` and ``evaluate --samples``), :mod:`.layerwise`
  (``bayespeft layerwise``), :mod:`.analyze` (``bayespeft analyze``, plots in :mod:`.layerwise_plots`),
  :mod:`.quickstart` (``bayespeft quickstart``);
* :mod:`.records`: run directories, output checks, and the shared results CSV (one row per distinct result).

The library packages (``data``, ``models``, ``adapters``, ``train``, ``laplace``, ``sgmcmc``, ``metrics``) never
import this package or :mod:`bayespeft.config`. Importing this package only loads :mod:`.records` (light); each
command module is imported by the CLI when that command runs.
"""

from .records import RESULT_COLUMNS, append_result, append_results, new_run_dir, read_results

__all__ = ["RESULT_COLUMNS", "append_result", "append_results", "new_run_dir", "read_results"]
