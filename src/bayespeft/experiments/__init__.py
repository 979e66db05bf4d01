"""Run records and result tables."""

from .records import RESULT_COLUMNS, append_result, new_run_dir, read_results

__all__ = ["RESULT_COLUMNS", "append_result", "new_run_dir", "read_results"]
