"""Progressive neural networks (Rusu et al., 2016): a new column per task, earlier columns frozen.

The first task trains the initial MLP as column 0. Each later task freezes everything, adds a
freshly initialised column (He init) whose hidden layers 2..L also read the previous layer of
every earlier column through lateral maps (zero-initialised; see pipeline/expansion.py), and
trains only that column and its laterals. A task is answered by its own column, so nothing a
later task does can change it: BWT is exactly 0, paid for with a model that grows by one column
per task (the parameter count reported after each task shows it).

Task-incremental: the task's identity picks the column at test time, so it does not apply to a
class-incremental growing head. No λ, no options. No lateral into the output layer (the column's
head reads its last hidden layer, which already mixes the earlier columns' features).
"""

from pipeline.expansion import PNN, freeze, new_column, require_mlp
from pipeline.strategies.base import Strategy


class ProgressiveNets(Strategy):
    name = "pnn"

    def before_task(self, model, task):
        if isinstance(model, PNN):
            freeze(model)
            model.add_column(new_column(model.base), task.name)
        else:
            require_mlp(model, self.name, growing_ok=False)
            first = model
            model = PNN(first.spec, [])
            model.add_column(first, task.name)
        super().before_task(model, task)
        return model
