"""Lightning's model summary without its FLOPs: Lightning counts FLOPs only for a module with an
`example_input_array`, which ovdet's modules have not (their inputs are images and a vocabulary), so the
column was all 0 and the summary ended in "Total FLOPs: 0", a number that measures nothing."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelSummary


class ParameterSummary(ModelSummary):
    """`ModelSummary` with the FLOPs column and total left out (see module doc)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
        from lightning.pytorch.utilities.rank_zero import rank_zero_info

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        rank_zero_info("\n" + "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops")))
