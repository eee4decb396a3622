"""JAX only: the time loop with its own backward pass (``jax.custom_vjp``).

JAX differentiates ``lax.scan`` step by step, and so does this loop; what
it changes is what each step of its backward pass does:

- forward, ``lax.scan`` runs the cell's step pieces (see
  ``keras_recurrent._cell``), each step projecting its own inputs, and keeps
  every step's output and the residuals of the VJP of ``update`` (the step
  without its matmuls: the gates and the states it reads, as JAX's own
  backward pass keeps them), but not those that are the step's ``h`` or
  ``h_{t-1}``, which backward reads from the outputs; for a cell that
  claims the plain or peephole LSTM's equations, with or without layer
  norm, :func:`_lstm_step` takes the step's VJP itself and keeps only its
  gates and ``c_{t-1}`` (and the normalised ``h_{t-1} U``);
- backward, a reverse ``lax.scan`` applies each step's VJP of ``update``
  to the states' gradients and sends ``dr_t @ kernel^T`` back to
  ``h_{t-1}``, ``r_t = h_in_t @ kernel`` being the recurrent matmul;
- the weights' gradients: for a batch of fewer than
  ``STEPWISE_FROM_BATCH`` sequences, whose steps' matmuls are small, each
  step keeps ``dr_t`` (and the projection's gradient, unless the cell's
  ``update`` reads ``projected_t + r`` only: ``update_sums_inputs``), and the
  recurrent kernel's gradient ``sum_t h_in_t^T dr_t``, the input
  projection's and the inputs' are one matmul each over all the steps. For
  larger batches they are summed step by step in the loop, which holds no
  ``(time, batch, gates * units)`` gradient: measured at S2 of the
  benchmark, that tensor's writes and reads cost more than the small
  matmuls save.

Not differentiated, the loop is the same forward pass, of which XLA stores
no residual, since nothing reads them.

The loop serves the same calls as the TensorFlow one: any cell whose
``call`` and ``project_inputs`` are the shared ones, variants included, in
float32 and float64 unless ``unroll=True``, masks and recurrent dropout
too. The cell's step pieces take every weight as an argument, which is what
a custom VJP needs: it differentiates its explicit inputs only.
"""

import functools

import jax
from jax import numpy as jnp
from keras import ops

from keras_recurrent import _ops
from keras_recurrent._cell import claimed_kernel, declared, recurrent_input
from keras_recurrent.loops import portable, shared

NAME = "jax-vjp"

#: From this batch size on, backward sums the weights' gradients step by
#: step (see the module's docstring).
STEPWISE_FROM_BATCH = 64

# The jitted loop per cell and options. Cells alike do not share it: telling
# them apart would import TensorFlow (see shared.Loops), and models compiled
# by Keras's trainer trace their loops anew in any case.
_LOOPS = shared.Loops(share_alike=False)


def serves(layer, mask, recurrent_dropout_mask):
    """Whether this loop runs ``layer``: see
    :func:`keras_recurrent.loops.portable.step_pieces_serve`."""
    return portable.step_pieces_serve(layer)


def recurrence(
    layer, sequences, initial_state, mask, recurrent_dropout_mask, training=False
):
    """:func:`keras_recurrent.loops.portable.recurrence`, with the VJP of
    :func:`_loop`. Without ``return_sequences`` Keras reads only the last
    output, the final ``h``: the outputs then have no gradient, so that the
    backward pass adds no zero gradient at every step."""
    cell = layer.cell
    xs, masks = portable.time_major(layer, sequences, mask)
    weights = [
        [ops.convert_to_tensor(w) for w in ws]
        for ws in (cell.input_weights(), cell.step_weights())
    ]
    states = [ops.cast(s, cell.variable_dtype) for s in initial_state]
    need_hs = layer.return_sequences
    hs, final = _compiled(cell, need_hs)(
        xs, masks, recurrent_dropout_mask, states, *weights
    )
    if not need_hs:
        hs = jax.lax.stop_gradient(hs)
    return portable.finish(layer, hs, final, masks)


def _compiled(cell, need_hs):
    """:func:`_loop`, under ``jax.jit``: made once per cell and options, so
    that a layer called outside a compiled function, as in a notebook,
    traces and compiles once per shape, not at every call (each compilation
    also holds memory mappings: a long run of eager calls ran out of them).
    The regime of backward is read when it is traced, so
    ``STEPWISE_FROM_BATCH`` is one of the options."""

    def build(cell_ref):
        return jax.jit(lambda *inputs: _loop(cell_ref(), need_hs)(*inputs))

    return _LOOPS.get(cell, (need_hs, STEPWISE_FROM_BATCH), build)


def _loop(cell, need_hs):
    """``run(xs, masks, rec_mask, states, input_weights, step_weights) ->
    (hs, final_states)`` over time-major raw inputs ``xs``, with its VJP;
    ``masks`` and ``rec_mask`` may be None and get no gradient, nor does
    ``hs`` without ``need_hs``."""
    dtype = cell.compute_dtype
    claim = claimed_kernel(cell)
    own_vjp = None
    if claim is not None and claim.name in _LSTM_KERNELS:
        peepholes, layer_norm = _LSTM_KERNELS[claim.name]
        epsilon = cell.layer_norm_epsilon if layer_norm else None
        own_vjp = functools.partial(_lstm_step, peepholes, epsilon)

    def parts(step_weights):
        """The recurrent kernel and the ``extra`` tensors of the step."""
        kernel, _, extra = cell.step_parts(step_weights)
        return kernel, extra

    treedefs = {}  # the structure of a step's VJP, known once traced

    def run_forward(xs, masks, rec_mask, states, input_weights, step_weights):
        kernel, update, extra = cell.step_parts(step_weights)

        def body(states, inputs):
            x_t, mask_t = inputs
            h_in = recurrent_input(states[0], rec_mask, dtype)
            # Each step projects its own inputs: one projection of the whole
            # sequence made a forward pass at S2 of the benchmark 1.5x slower.
            projected_t = cell.project(x_t, input_weights)

            def step(projected_t, r, old, extra):
                h_in = recurrent_input(old[0], rec_mask, dtype)
                new = update(projected_t, r, h_in, old, extra)
                return portable.keep_masked(mask_t, new, old)

            if own_vjp is None:
                new, vjp = jax.vjp(step, projected_t, h_in @ kernel, states, extra)
            else:
                new, vjp = own_vjp(projected_t, h_in @ kernel, states, extra, mask_t)
            # What backward reads of this step: the residuals of its VJP (the
            # gates, and the states it reads, as JAX's own gradient keeps them),
            # except those that are h_t or h_{t-1} (SimpleRNN's tanh keeps its
            # output) or a weight in extra, which backward has already.
            leaves, treedefs["step"] = jax.tree_util.tree_flatten(vjp)
            known = {id(new[0]): "h", id(states[0]): "h_before"}
            known.update((id(e), index) for index, e in enumerate(extra))
            treedefs["shared"] = [known.get(id(leaf)) for leaf in leaves]
            kept = [
                leaf
                for leaf, shared in zip(leaves, treedefs["shared"])
                if shared is None
            ]
            return new, (new[0], kept)

        final, (hs, leaves) = jax.lax.scan(body, states, (xs, masks))
        saved = (xs, rec_mask, states[0], input_weights, step_weights, hs, leaves)
        return (hs, final), saved

    @jax.custom_vjp
    def run(*inputs):
        # Not differentiated: nothing reads the residuals, and XLA stores none.
        return run_forward(*inputs)[0]

    def run_backward(residuals, d_outputs):
        xs, rec_mask, h_0, input_weights, step_weights, hs, leaves = residuals
        d_hs, d_final = d_outputs
        (kernel, extra), parts_vjp = jax.vjp(parts, step_weights)
        # The h each step started from: the initial one, then every step's
        # but the last.
        hs_before = jnp.concatenate([h_0[None], hs[:-1]])
        h_ins = recurrent_input(hs_before, rec_mask, dtype)

        # Small batches: each step's gradients of the recurrent matmul and
        # of the projection are kept, for one matmul each over all steps.
        batch = xs.shape[1]
        whole = isinstance(batch, int) and batch < STEPWISE_FROM_BATCH
        sums = declared(cell, "update_sums_inputs", False)

        def body(carry, inputs):
            d_states, d_extra, d_kernel, d_input_weights = carry
            x_t, h_in, kept_t, h_t, h_before_t, d_h_t = inputs
            d_new = list(d_states)
            if need_hs:
                d_new[0] = d_new[0] + d_h_t
            kept_t = iter(kept_t)
            states_t = {"h": h_t, "h_before": h_before_t, **dict(enumerate(extra))}
            leaves_t = [
                next(kept_t) if shared is None else states_t[shared]
                for shared in treedefs["shared"]
            ]
            vjp = jax.tree_util.tree_unflatten(treedefs["step"], leaves_t)
            d_projected, d_r, d_old, d_step_extra = vjp(d_new)
            d_h_in = d_r @ kernel.T
            if rec_mask is not None:
                d_h_in = d_h_in * rec_mask
            d_old[0] = d_old[0] + d_h_in.astype(d_old[0].dtype)
            d_extra = [a + b for a, b in zip(d_extra, d_step_extra)]
            if whole:
                # For update_sums_inputs cells d_projected == d_r: kept once.
                kept = (d_r,) if sums else (d_projected, d_r)
                return (d_old, d_extra, d_kernel, d_input_weights), kept
            d_kernel = d_kernel + h_in.T @ d_r
            _, project_vjp = jax.vjp(cell.project, x_t, input_weights)
            d_x, d_in = project_vjp(d_projected)
            d_input_weights = [a + b for a, b in zip(d_input_weights, d_in)]
            return (d_old, d_extra, d_kernel, d_input_weights), d_x

        inputs = (xs, h_ins, leaves, hs, hs_before, d_hs if need_hs else None)
        carry = (
            list(d_final),
            [jnp.zeros_like(e) for e in extra],
            jnp.zeros_like(kernel),
            [jnp.zeros_like(w) for w in input_weights],
        )
        (d_states, d_extra, d_kernel, d_input_weights), d_steps = jax.lax.scan(
            body, carry, inputs, reverse=True
        )
        if whole:
            d_projected, d_rs = d_steps[0], d_steps[-1]
            d_kernel = jnp.tensordot(h_ins, d_rs, axes=[[0, 1], [0, 1]])
            _, project_vjp = jax.vjp(cell.project, xs, input_weights)
            d_xs, d_input_weights = project_vjp(d_projected)
        else:
            d_xs = d_steps
        (d_step_weights,) = parts_vjp((d_kernel, d_extra))
        return d_xs, None, None, d_states, d_input_weights, d_step_weights

    run.defvjp(run_forward, run_backward)
    return run


#: The kernels whose steps :func:`_lstm_step` differentiates, with whether
#: they have peepholes and layer norm.
_LSTM_KERNELS = {
    "lstm": (False, False),
    "lstm_peephole": (True, False),
    "lstm_layer_norm": (False, True),
    "lstm_layer_norm_peephole": (True, True),
}


def _lstm_step(peepholes, epsilon, projected_t, r, states, extra, mask_t):
    """``(new_states, vjp)``, as ``jax.vjp`` of the loop's step gives them,
    for a cell that claims one of the LSTM's :data:`_LSTM_KERNELS` (see
    ``keras_recurrent._cell.FusedKernel``), whose ``extra`` is ``[p_if,
    p_o]`` with peepholes, then with layer norm (``epsilon`` not None) the
    gains and offsets of ``h_{t-1} U`` and of ``c_t``.

    ``vjp`` keeps the step's four gates and ``c_{t-1}``, as much as five
    ``(batch, units)`` tensors, where JAX's own VJP of the plain LSTM's step
    keeps nine tensors holding as much as twelve; with layer norm, also the
    normalised ``h_{t-1} U`` and its scale, four more. Backward computes
    ``c_t`` (and its normalisation) again from them."""
    _, c_tm1 = states
    peephole_weights, norms = (extra[:2], extra[2:]) if peepholes else ([], extra)
    normalised = ()
    if epsilon is not None:
        r_gamma, r_beta, c_gamma, c_beta = norms
        r_hat, r_scale = _ops.normalise(r, epsilon)
        r = r_hat * r_gamma + r_beta
        normalised = (r_hat, r_scale)
    z = projected_t + r
    units = c_tm1.shape[-1]
    # Splits, not slices: a slice of a symbolic batch (jax2tf's export) is a
    # gather, which TFLite's converter refuses.
    z_if, z_g, z_o = jnp.split(z, [2 * units, 3 * units], axis=-1)
    if peepholes:
        p_if, p_o = peephole_weights
        z_if = z_if + p_if * jnp.concatenate([c_tm1, c_tm1], -1)
    i_f = jax.nn.sigmoid(z_if)
    i, f = jnp.split(i_f, 2, axis=-1)
    g = jnp.tanh(z_g)
    c = f * c_tm1 + i * g
    if peepholes:
        z_o = z_o + p_o * c
    o = jax.nn.sigmoid(z_o)
    c_out = c
    if epsilon is not None:
        c_out = _ops.normalise(c, epsilon)[0] * c_gamma + c_beta
    new = portable.keep_masked(mask_t, [o * jnp.tanh(c_out), c], states)
    gates = jnp.concatenate([i_f, g, o], -1)
    backward = functools.partial(_lstm_step_backward, peepholes, epsilon)
    return new, jax.tree_util.Partial(backward, gates, c_tm1, normalised, extra, mask_t)


def _lstm_step_backward(
    peepholes, epsilon, gates, c_tm1, normalised, extra, mask_t, d_new
):
    """``(d_projected, d_r, d_states, d_extra)`` of :func:`_lstm_step`."""
    d_h, d_c = d_new
    if mask_t is not None:
        # A masked step carries both states over: their gradients pass by.
        d_h_kept, d_c_kept = jnp.where(mask_t, 0, d_h), jnp.where(mask_t, 0, d_c)
        d_h, d_c = jnp.where(mask_t, d_h, 0), jnp.where(mask_t, d_c, 0)
    peephole_weights, norms = (extra[:2], extra[2:]) if peepholes else ([], extra)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = f * c_tm1 + i * g
    if epsilon is None:
        tanh_c = jnp.tanh(c)
    else:
        r_gamma, _, c_gamma, c_beta = norms
        c_hat, c_scale = _ops.normalise(c, epsilon)
        tanh_c = jnp.tanh(c_hat * c_gamma + c_beta)
    d_z_o = d_h * tanh_c * o * (1 - o)
    d_c_out = d_h * o * (1 - tanh_c * tanh_c)
    d_norms = []
    if epsilon is not None:
        d_norms = [jnp.sum(d_c_out * c_hat, 0), jnp.sum(d_c_out, 0)]
        d_c_out = _normalise_backward(d_c_out * c_gamma, c_hat, c_scale)
    d_c = d_c + d_c_out
    if peepholes:
        p_if, p_o = peephole_weights
        d_c = d_c + d_z_o * p_o
    d_z_i = d_c * g * i * (1 - i)
    d_z_f = d_c * c_tm1 * f * (1 - f)
    d_z_g = d_c * i * (1 - g * g)
    d_c_tm1 = d_c * f
    d_extra = []
    if peepholes:
        p_i, p_f = jnp.split(p_if, 2)
        d_c_tm1 = d_c_tm1 + d_z_i * p_i + d_z_f * p_f
        d_z_if = jnp.concatenate([d_z_i, d_z_f], -1)
        c_in = jnp.concatenate([c_tm1, c_tm1], -1)
        d_extra = [jnp.sum(d_z_if * c_in, 0), jnp.sum(d_z_o * c, 0)]
    d_h_tm1 = jnp.zeros_like(d_h)
    if mask_t is not None:
        d_h_tm1, d_c_tm1 = d_h_kept, d_c_tm1 + d_c_kept
    d_z = jnp.concatenate([d_z_i, d_z_f, d_z_g, d_z_o], -1)
    d_r = d_z
    if epsilon is not None:
        r_hat, r_scale = normalised
        d_extra += [jnp.sum(d_z * r_hat, 0), jnp.sum(d_z, 0), *d_norms]
        d_r = _normalise_backward(d_z * r_gamma, r_hat, r_scale)
    return d_z, d_r, [d_h_tm1, d_c_tm1], d_extra


def _normalise_backward(d_z_hat, z_hat, scale):
    """The gradient of ``keras_recurrent._ops.normalise``'s ``z`` from that
    of ``z_hat``."""
    width = z_hat.shape[-1]
    mean_d = jnp.sum(d_z_hat, -1, keepdims=True) / width
    mean_d_z_hat = jnp.sum(d_z_hat * z_hat, -1, keepdims=True) / width
    return scale * (d_z_hat - mean_d - z_hat * mean_d_z_hat)
