"""Learning-rate schedules in nnU-Net's style: `step(current_epoch)` sets the rate for that epoch."""
import math

from torch.optim.lr_scheduler import _LRScheduler


class CosineAnnealingLRScheduler(_LRScheduler):
    """Cosine annealing from `initial_lr` to `min_lr` over `max_steps` epochs (DNANet's schedule).

    nnU-Net calls `step(self.current_epoch)` at the start of every epoch, so the rate depends only on the
    epoch number and a resumed run continues on the same curve (torch's CosineAnnealingLR is recursive
    and deprecated with an explicit epoch).
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, min_lr: float = 0.0, current_step: int = None):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_steps = max(int(max_steps), 1)
        self.min_lr = min_lr
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        progress = min(current_step, self.max_steps) / self.max_steps
        new_lr = self.min_lr + 0.5 * (self.initial_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        for param_group in self.optimizer.param_groups:
            # a group may run at a fixed fraction of the schedule (e.g. IAANet's transformer)
            param_group['lr'] = new_lr * param_group.get('lr_scale', 1.0)
        self._last_lr = [group['lr'] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr
