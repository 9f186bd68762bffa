"""A toy method, written as a new port would be: its own hyper-parameter, its own default
sampler and two configured losses, in this file alone (test fixture for the spine contract).

    loss = main_loss(z) + mix * aux_loss(z)

The main loss is the ``--loss``; the ``aux`` role is a second loss with its own flags
(``--toy_aux_loss``, ``--toy_aux_loss_<loss>_<param>``, ``--toy_aux_proxy_initializer``,
``--toy_aux_loss_lr_multiplier``, ...), a proxy loss by default, trained in its own group.
"""
from dmltf import methods
from dmltf.methods import LossRole, Method, OptimizerGroup, gather_global_batch, loss_weights_group


@methods.register("toy")
class ToyMethod(Method):
    default_sampler = "class_blocks"
    loss_roles = {"aux": LossRole("the auxiliary loss", {"loss": "proxy_nca", "proxy_initializer": "orthogonal",
                                                         "loss_lr_multiplier": 10.0})}
    flag_help = {"mix": "Weight of the auxiliary loss."}

    def __init__(self, embedding_model, main_loss, aux_loss, mix=0.5, **kwargs):
        super().__init__(**kwargs)
        self.embedding_model, self.main_loss, self.aux_loss, self.mix = embedding_model, main_loss, aux_loss, mix

    @classmethod
    def from_parts(cls, parts, **hyperparameters):
        model = parts.embedding_model()
        dim = model.output_shape[-1]
        return cls(model, parts.loss(embedding_dim=dim), parts.loss("aux", embedding_dim=dim), **hyperparameters)

    def compute_losses(self, batch, training=True):
        images, labels = batch
        labels, embeddings = gather_global_batch(labels, self.embedding_model(images, training=training))
        main, aux = self.main_loss(labels, embeddings), self.aux_loss(labels, embeddings)
        return {"loss": main + self.mix * aux, "main": main, "aux": aux}

    def optimizer_groups(self):
        groups = [OptimizerGroup("model", self.embedding_model.trainable_variables),
                  loss_weights_group(self.main_loss), loss_weights_group(self.aux_loss, name="aux_loss")]
        return [g for g in groups if g.variables]
