"""The `shallow` catalog family: scikit-learn estimators in the `fit` phase, beside the deep models.

Same dataset, same split, same meters, window and result schema as a deep `fit` cell. Features are
the flattened pixels scaled to [0, 1] (at the test's input size: 8x8 grey for digits, 64 features),
no other transform, so the comparison with the deep models is on the same information.

What an "epoch" and a "step" (a budget's boundary) are, per estimator:
- logistic_regression, linear_svm: SGDClassifier (log loss / hinge), partial_fit; an epoch is one
  shuffled pass, a step one mini-batch of `batch_size`;
- random_forest: warm_start, a step adds one tree, an epoch `estimators_per_epoch` trees;
- hist_gradient_boosting: warm_start, a step adds one boosting iteration (one tree per class), an
  epoch `estimators_per_epoch` of them; early stopping off, so the rules are the fit phase's;
- rbf_svm: SVC, one fit call with no step boundary inside: `budget: not enforceable`; the cell
  reports the energy it used, and whether that was within the budget.
"""
from __future__ import annotations

import numpy as np

# A shallow cell's `backend`: scikit-learn runs on no Keras backend, so a sweep's backend axis does not
# multiply its cells (orchestrator/matrix.py), and its job imports no deep-learning framework.
SHALLOW_BACKEND = "sklearn"


def logistic_regression(seed: int):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed)


def linear_svm(seed: int):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="hinge", alpha=1e-4, random_state=seed)


def random_forest(seed: int):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=0, warm_start=True, n_jobs=1, random_state=seed)


def hist_gradient_boosting(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=0, warm_start=True, early_stopping=False, random_state=seed)


def rbf_svm(seed: int):
    from sklearn.svm import SVC

    return SVC(kernel="rbf", gamma="scale", random_state=seed)


# How each estimator grows: partial_fit mini-batches, one more estimator per step, or one fit call.
_GROWTH = {"logistic_regression": "partial_fit", "linear_svm": "partial_fit", "random_forest": "n_estimators",
           "hist_gradient_boosting": "max_iter", "rbf_svm": "once"}


class ShallowTrainer:
    def __init__(self, test, num_classes: int, fit: dict, params: dict):
        self.name = test.name
        self.seed = params["seed"] + params["repetition"]
        self.estimator = test.load_builder()(self.seed)
        self.growth = _GROWTH[test.name]
        self.enforceable = self.growth != "once"
        self.done = False
        self.classes = np.arange(num_classes)
        self.batch = params["batch_size"]
        self.per_epoch = fit["estimators_per_epoch"]
        self.rng = np.random.default_rng(self.seed)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    def train_epoch(self, x, y, budget) -> dict:
        steps = samples = 0
        if self.growth == "partial_fit":
            order = self.rng.permutation(len(y))
            for begin in range(0, len(y), self.batch):
                chunk = order[begin:begin + self.batch]
                self.estimator.partial_fit(x[chunk], y[chunk], classes=self.classes)
                steps, samples = steps + 1, samples + len(chunk)
                if budget.step():
                    break
        elif self.growth == "once":
            self.estimator.fit(x, y)
            steps, samples, self.done = 1, len(y), True
            budget.step()
        else:
            for _ in range(self.per_epoch):
                setattr(self.estimator, self.growth, getattr(self.estimator, self.growth) + 1)
                self.estimator.fit(x, y)  # warm start: fits only the new tree/iteration
                steps, samples = steps + 1, samples + len(y)
                if budget.step():
                    break
        return {"steps": steps, "samples": samples, "train_loss": self._loss(x, y)}

    def _loss(self, x, y) -> float:
        from sklearn.metrics import hinge_loss, log_loss

        if hasattr(self.estimator, "predict_proba") and self.growth != "once":
            return float(log_loss(y, self.estimator.predict_proba(x), labels=self.classes))
        return float(hinge_loss(y, self.estimator.decision_function(x), labels=self.classes))

    def evaluate(self, x, y) -> float:
        return float(np.mean(self.estimator.predict(x) == y))

    def model_record(self) -> dict:
        import sklearn

        return {"family": "shallow", "estimator": type(self.estimator).__name__, "scikit_learn": sklearn.__version__,
                "estimator_params": {k: v for k, v in self.estimator.get_params().items()
                                     if isinstance(v, (int, float, str, bool, type(None)))},
                "features": "flattened pixels scaled to [0, 1]", "growth": self.growth,
                "budget_enforceable": self.enforceable, "total_params": None, "trainable_params": None}
