"""Trainers that stop after a fixed CPU-time budget, for comparing trainers at equal cost.

Used only by benchmarks/fewshot_benchmark.py, which puts this folder and trainers/ on
`nnUNet_extTrainer` and PYTHONPATH. The budget comes from MRICORE_CPU_BUDGET_S (CPU seconds of the
training process, all threads together, final validation excluded).
"""

from __future__ import annotations

import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from MRICoreTrainer import (MRICoreTrainer, MRICoreTrainer_adapter, MRICoreTrainer_frozen, MRICoreTrainer_lora,
                            MRICoreTrainer_scratch)

ITERATIONS_PER_EPOCH = 10


class CPUBudgetMixin:
    """Replace the fixed epoch count by as many epochs as fit the CPU budget.

    After every epoch the number of epochs is set again from the CPU time left and the cost of the
    epoch just finished, so the learning-rate schedules (nnU-Net's polynomial decay and ours) end
    when the budget does, within one epoch. The first epoch's cost includes start-up, so it sets
    the schedule only until the second epoch ends. Where one epoch costs more than the whole budget
    (large patches on a CPU), training stops after the iteration that used the budget up. The final
    validation is skipped: the benchmark scores held-out test volumes instead.
    """

    def run_training(self):
        budget = float(os.environ["MRICORE_CPU_BUDGET_S"])
        self.num_iterations_per_epoch = ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = 2
        self.on_train_start()
        self._warmup_fraction = getattr(self.lr_scheduler, "warmup_epochs", 0) / self.num_epochs
        start = time.process_time()

        used = 0.0
        while self.current_epoch < self.num_epochs and used < budget:
            epoch_start = time.process_time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                outputs.append(self.train_step(next(self.dataloader_train)))
                if time.process_time() - start > budget:
                    break
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)])
            self.on_epoch_end()  # increments current_epoch

            used = time.process_time() - start
            epoch_cost = time.process_time() - epoch_start
            self._fit_schedule_to_budget(self.current_epoch + max(0, int((budget - used) / epoch_cost)))
        self.print_to_log_file(f"CPU budget {budget:.0f} s: stopped after {self.current_epoch} epochs and {used:.1f} CPU-s.")
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("Final validation skipped: the benchmark scores held-out test volumes.")

    def _fit_schedule_to_budget(self, num_epochs: int) -> None:
        if num_epochs == self.num_epochs:
            return
        self.num_epochs = num_epochs
        for attribute in ("max_steps", "num_epochs"):
            if hasattr(self.lr_scheduler, attribute):
                setattr(self.lr_scheduler, attribute, num_epochs)
        # Our trainers' decoder warm-up is a fraction of the schedule, so it shrinks with it.
        if hasattr(self.lr_scheduler, "warmup_epochs"):
            self.lr_scheduler.warmup_epochs = self.warmup_epochs = int(round(self._warmup_fraction * num_epochs))
        self.print_to_log_file(f"Schedule set to {num_epochs} epochs of {self.num_iterations_per_epoch} iterations.")


class nnUNetTrainer_budget(CPUBudgetMixin, nnUNetTrainer):
    pass


class MRICoreTrainer_budget(CPUBudgetMixin, MRICoreTrainer):
    pass


class MRICoreTrainer_scratch_budget(CPUBudgetMixin, MRICoreTrainer_scratch):
    pass


class MRICoreTrainer_frozen_budget(CPUBudgetMixin, MRICoreTrainer_frozen):
    pass


class MRICoreTrainer_adapter_budget(CPUBudgetMixin, MRICoreTrainer_adapter):
    pass


class MRICoreTrainer_lora_budget(CPUBudgetMixin, MRICoreTrainer_lora):
    pass
