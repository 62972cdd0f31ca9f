"""nnU-Net trainers with the MRI-CORE encoder: `nnUNetv2_train DATASET 2d FOLD -tr MRICoreTrainer`.

nnU-Net finds these through `nnUNet_extTrainer` (see `mricore_nnunet env`). Each variant overrides
one class attribute; the recipe itself lives in `mricore_nnunet.training`.
"""

from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from mricore_nnunet import training, validation
from mricore_nnunet.network import MRICoreSegmentationNetwork


class MRICoreTrainer(nnUNetTrainer):
    """Pretrained encoder, decoder warm-up then the whole network, AdamW with layer-wise learning-rate decay."""

    finetune_mode = "full"
    pretrained = True
    recipe = training.Recipe()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        recipe = self.recipe.with_environment()
        self.num_epochs = recipe.num_epochs
        self.num_iterations_per_epoch = recipe.iterations_per_epoch
        self.num_val_iterations_per_epoch = recipe.val_iterations_per_epoch
        self.save_every = recipe.save_every
        self.initial_lr = recipe.initial_lr
        self.weight_decay = recipe.weight_decay
        self.layer_decay = recipe.layer_decay
        self.warmup_epochs = recipe.warmup_epochs if self.pretrained and self.finetune_mode == "full" else 0

        self.pretrain_info = self.plans_manager.plans.get("pretrain_info", {})
        self.checkpoint_path = training.resolve_checkpoint(self.pretrain_info) if self.pretrained else None
        if not training.is_mricore_configuration(self.configuration_manager.configuration):
            adapted = training.adapt_plans_for_vit(
                self.plans_manager.plans, configuration, training.preset_for_default_plans(self.checkpoint_path)
            )
            self.plans_manager = PlansManager(adapted)
            self.configuration_manager = self.plans_manager.get_configuration(configuration)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["finetune"] = cls.finetune_mode
        return MRICoreSegmentationNetwork(num_input_channels, num_output_channels, enable_deep_supervision, **kwargs)

    def initialize(self):
        # Fail before any data loading or compute when the inputs cannot work.
        if self.fold != "all":
            validation.check_fold_count(self.preprocessed_dataset_folder_base, self.fold)
        planned_random = self.pretrain_info.get("init") == "random"
        if self.pretrained and not self.checkpoint_path and not planned_random:
            raise RuntimeError(training.missing_checkpoint_message(self.plans_manager.plans_name))

        super().initialize()
        network = self._unwrapped_network()
        if self.checkpoint_path:
            report = training.load_pretrained_encoder(network, self.checkpoint_path, self.pretrain_info.get("sha256"))
            self.print_to_log_file(f"Encoder initialised from {self.checkpoint_path}:\n{report.format()}")
        else:
            self.print_to_log_file(
                "WARNING: encoder randomly initialised, as planned with --random-init: this is the from-scratch baseline."
                if self.pretrained else "Encoder randomly initialised (no pretrained checkpoint)."
            )
        self.finetune_trainable = {n for n, p in network.encoder.named_parameters() if p.requires_grad}

    def _unwrapped_network(self) -> MRICoreSegmentationNetwork:
        network = self.network.module if self.is_ddp else self.network
        return getattr(network, "_orig_mod", network)

    def configure_optimizers(self):
        groups = training.parameter_groups(self.network, self.initial_lr, self.weight_decay, self.layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, weight_decay=self.weight_decay)
        scheduler = training.WarmupPolyLR(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)
        return optimizer, scheduler

    def train_step(self, batch: dict) -> dict:
        try:
            return super().train_step(batch)
        except RuntimeError as error:
            if not training.is_out_of_memory(error):
                raise
            arch = self.configuration_manager.network_arch_init_kwargs
            raise RuntimeError(training.out_of_memory_message(
                self.device, self.batch_size, self.configuration_manager.patch_size, arch["preset"])) from error

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net writes in place; a kill during the write would leave a corrupt checkpoint for --c to load.
        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        if os.path.isfile(partial):
            os.replace(partial, filename)

    def on_train_epoch_start(self):
        # The encoder stays fixed while the freshly initialised decoder warms up.
        in_warmup = self.lr_scheduler.in_warmup(self.current_epoch)
        training.set_encoder_trainable(self._unwrapped_network(), not in_warmup, self.finetune_trainable)
        if in_warmup and self.current_epoch == 0:
            self.print_to_log_file(f"Decoder warm-up for {self.warmup_epochs} epochs; the encoder is frozen meanwhile.")
        super().on_train_epoch_start()


class MRICoreTrainer_frozen(MRICoreTrainer):
    """Only the decoder trains; the pretrained encoder stays fixed."""

    finetune_mode = "frozen"


class MRICoreTrainer_adapter(MRICoreTrainer):
    """The official MRI-CORE recipe: adapters in the first two and last two blocks, the rest frozen."""

    finetune_mode = "adapter"


class MRICoreTrainer_lora(MRICoreTrainer):
    """Low-rank updates of every attention projection; the rest of the encoder frozen."""

    finetune_mode = "lora"


class MRICoreTrainer_scratch(MRICoreTrainer):
    """A randomly initialised encoder, trained from scratch: the baseline without pre-training."""

    pretrained = False
    recipe = training.Recipe(layer_decay=1.0, initial_lr=1e-3)
