"""Smoothing inside the network: layer=, token attributions (Hugging Face), Smooth Grad-CAM."""
import pytest
import torch
import transformers
from captum.attr import LayerAttribution, LayerGradCam

import fastmollify as fm


def text_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(30, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 5, 16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()


IDS = torch.randint(0, 30, (4, 5), generator=torch.Generator().manual_seed(1))


def embedding_gradient(model, ids, target):
    """The plain gradient of the score with respect to the embedding output, by hand."""
    e = model[0](ids).detach().requires_grad_(True)
    out = e
    for layer in list(model)[1:]:
        out = layer(out)
    out[torch.arange(len(ids)), target].sum().backward()
    return e.grad


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("layer", ["0", "layer object"])
def test_gradient_at_a_layer_and_tiny_noise_equal_the_hand_computed_gradient(layer):
    model = text_model()
    layer = model[0] if layer == "layer object" else layer
    target = torch.tensor([0, 1, 2, 1])
    expected = embedding_gradient(model, IDS, target)
    torch.testing.assert_close(fm.gradient(model, IDS, target, layer=layer), expected)
    torch.testing.assert_close(fm.smoothgrad(model, IDS, target, layer=layer, sigma=1e-5, n=6), expected,
                               rtol=1e-3, atol=1e-5)
    assert no_hooks_left(model)


def test_layer_noise_keeps_the_noise_stream_guarantees():
    model = text_model()
    run = dict(layer="0", noise_level=0.3, n=13, seed=4)
    whole = fm.smoothgrad(model, IDS, 2, **run)
    for chunk in (1, 5):
        torch.testing.assert_close(fm.smoothgrad(model, IDS, 2, chunk_size=chunk, **run), whole, rtol=1e-5, atol=1e-7)
    # bounds from each part's own range would differ: give them, as for inputs
    bounds = fm.gradient(model, IDS, 2, layer="0").new_tensor([-4.0, 4.0])
    run = dict(run, bounds=(float(bounds[0]), float(bounds[1])))
    whole = fm.smoothgrad(model, IDS, 2, **run)
    split = torch.cat([fm.smoothgrad(model, IDS[:1], 2, **run), fm.smoothgrad(model, IDS[1:], 2, example_offset=1, **run)])
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-7)


def test_tol_at_a_layer_slices_the_inputs_of_the_rows_still_sampling():
    model = text_model()
    stats = fm.mollify(model, IDS, 1, layer="0", kernel="sigmoid", eps=0.5, n=200, tol=0.1, chunk_size=10, seed=3,
                       reduce="stats")
    for b in range(4):
        alone = fm.mollify(model, IDS[b:b + 1], 1, layer="0", kernel="sigmoid", eps=0.5, n=int(stats.n[b]),
                           chunk_size=10, seed=3, example_offset=b)
        torch.testing.assert_close(stats.mean[b:b + 1], alone, rtol=1e-5, atol=1e-7)


class Block(torch.nn.Module):
    """Returns (output, attention-like weights), as attention blocks do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 6)

    def forward(self, x):
        out = torch.tanh(self.linear(x))
        return out, out.softmax(-1)


class WithBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = Block(), torch.nn.Linear(6, 2)

    def forward(self, x):
        out, weights = self.block(x)
        return self.head(out * weights)


def test_tuple_outputs_pick_the_first_tensor_or_layer_output():
    torch.manual_seed(2)
    model, x = WithBlock().eval(), torch.rand(3, 6)
    first = fm.gradient(model, x, 1, layer="block")
    out, weights = model.block(x)
    out = out.detach().requires_grad_(True)
    model.head(out * weights.detach())[:, 1].sum().backward()
    torch.testing.assert_close(first, out.grad)
    second = fm.gradient(model, x, 1, layer="block", layer_output=1)
    out, weights = model.block(x)
    weights = weights.detach().requires_grad_(True)
    model.head(out.detach() * weights)[:, 1].sum().backward()
    torch.testing.assert_close(second, weights.grad)


class Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.shared, self.unused, self.head = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.shared(torch.tanh(self.shared(x))))


@pytest.mark.parametrize("call,error,message", [
    (lambda m: fm.smoothgrad(m, IDS, 0, layer="fc9"), ValueError, "not a submodule"),
    (lambda m: fm.smoothgrad(m, IDS, 0, layer="4.wieght"), ValueError, "not a submodule"),
    (lambda m: fm.smoothgrad(m, IDS, 0, layer=torch.nn.Linear(2, 2)), ValueError, "not a submodule"),
    (lambda m: fm.smoothgrad(m, IDS, 0, layer=3), TypeError, "layer must be a submodule"),
    (lambda m: fm.smoothgrad(m, IDS, 0, layer="1", layer_output=0), ValueError, "layer_output=0 indexes a tuple"),
    (lambda m: fm.smoothgrad(m, IDS, 0, layer_output=0), ValueError, "need layer="),
    (lambda m: fm.smoothgrad(WithBlock(), torch.rand(2, 6), 0, layer="block", layer_output=2), ValueError,
     "layer_output=2 is out of range"),
    (lambda m: fm.smoothgrad(WithBlock(), torch.rand(2, 6), 0, layer="block", layer_output="1"), TypeError,
     "layer_output must be an integer"),
    (lambda m: fm.noisegrad(m, IDS, 0, layer="0"), ValueError, "layer= with weight noise at the layer is refused"),
    (lambda m: fm.smoothgrad(Twice(), torch.rand(2, 6), 0, layer="shared"), ValueError, "ran 2 times"),
    (lambda m: fm.smoothgrad(Twice(), torch.rand(2, 6), 0, layer="unused"), ValueError, "ran 0 times"),
    (lambda m: fm.smoothgrad(torch.nn.Sequential(torch.nn.Identity(), m), IDS, 0, layer="0"), ValueError,
     "outputs torch.int64"),
])
def test_bad_layers_are_refused(call, error, message):
    model = text_model()
    with pytest.raises(error, match=message):
        call(model)
    assert no_hooks_left(model)


def test_close_names_are_suggested():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="did you mean 'encoder'"):
        fm.smoothgrad(model, torch.rand(2, 4), 0, layer="encodr")


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


def test_hugging_face_classifier_token_attributions():
    model = tiny_bert()
    ids = torch.randint(1, 50, (3, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # padding
    ids[0, 5:] = 0
    target = torch.tensor([0, 2, 1])
    layer = "bert.embeddings.word_embeddings"
    got = fm.gradient(model, ids, target, layer=layer, additional_forward_args=(mask,))
    embeds = model.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
    model(inputs_embeds=embeds, attention_mask=mask).logits[torch.arange(3), target].sum().backward()
    torch.testing.assert_close(got, embeds.grad, rtol=1e-4, atol=1e-6)
    smooth = fm.smoothgrad(model, ids, target, layer=layer, additional_forward_args=(mask,), n=8, noise_level=0.1,
                           reduce="stats")
    assert smooth.mean.shape == (3, 7, 16) and torch.isfinite(smooth.stderr).all()
    scores = fm.token_scores(smooth.mean, reduce="l2", mask=mask)
    assert scores.shape == (3, 7) and (scores[0, 5:] == 0).all() and (scores[0, :5] > 0).all()
    torch.testing.assert_close(fm.token_scores(smooth.mean), smooth.mean.sum(-1))


@pytest.mark.parametrize("bad,message", [(torch.rand(3, 7), r"\[B, T, H\]"), ("x", r"\[B, T, H\]")])
def test_token_scores_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        fm.token_scores(bad)
    with pytest.raises(ValueError, match="reduce must be"):
        fm.token_scores(torch.rand(1, 2, 3), reduce="max")


def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(6, 3)).eval()


def test_plain_gradcam_is_captums():
    model, x = cnn(), torch.rand(2, 3, 9, 7)
    captum = LayerGradCam(model, model[2]).attribute(x, target=1, relu_attributions=True)
    torch.testing.assert_close(fm.gradcam(model, x, 1, layer="2", method="gradient", upsample=False), captum[:, 0])
    torch.testing.assert_close(fm.gradcam(model, x, 1, layer=model[2], method="gradient"),
                               LayerAttribution.interpolate(captum, (9, 7), interpolate_mode="bilinear")[:, 0])


def test_smooth_gradcam_tends_to_gradcam_and_differs_with_noise():
    model, x = cnn(), torch.rand(2, 3, 8, 8)
    plain = fm.gradcam(model, x, 1, layer="2", method="gradient")
    torch.testing.assert_close(fm.gradcam(model, x, 1, layer="2", sigma=1e-6, n=4), plain, rtol=1e-3, atol=1e-5)
    smooth = fm.gradcam(model, x, 1, layer="2", method="adaptgrad", n=16, relu=False)
    assert smooth.shape == (2, 8, 8) and not torch.allclose(smooth.clamp(min=0), plain)


@pytest.mark.parametrize("call,message", [
    (lambda m, x: fm.gradcam(m, x, 1, layer="6"), r"feature map \[B, C, h, w\]"),
    (lambda m, x: fm.gradcam(m, x, 1, layer="2", method="noisegrad"), "method must be one of"),
    (lambda m, x: fm.gradcam(m, x, 1, layer="2", reduce="var"), "takes no reduce"),
])
def test_gradcam_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(cnn(), torch.rand(1, 3, 8, 8))


def test_explainer_takes_layer():
    model = text_model()
    got = fm.Explainer(model, method="mollify", kernel="poisson", eps=0.2, layer="0").attribute(IDS, target=1, n=4)
    torch.testing.assert_close(got, fm.mollify(model, IDS, 1, kernel="poisson", eps=0.2, layer="0", n=4))


def test_noise_at_the_input_with_the_gradient_at_a_layer_is_the_hand_computed_mean():
    model, x = cnn(), torch.rand(2, 3, 8, 8)
    seen = []
    fm.smoothgrad(lambda t: seen.append(t.detach().clone()) or model(t), x, 1, n=5, sigma=0.1, chunk_size=5)
    activation = model[1](model[0](seen[0])).detach()  # noisy inputs through the layers before '2'
    activation = model[2](activation).detach().requires_grad_(True)
    rest = activation
    for layer in list(model)[3:]:
        rest = layer(rest)
    rest[:, 1].sum().backward()
    expected = activation.grad.reshape(5, 2, 6, 8, 8).mean(0)
    got = fm.smoothgrad(model, x, 1, layer="2", noise_at="input", n=5, sigma=0.1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    weights = fm.noisegrad(model, x, 1, layer="2", noise_at="input", m=2, reduce="stats")  # weight noise: allowed
    assert weights.mean.shape == (2, 6, 8, 8) and weights.units.n == 2


def test_input_noise_gradcam_tends_to_gradcam():
    model, x = cnn(), torch.rand(2, 3, 8, 8)
    plain = fm.gradcam(model, x, 1, layer="2", method="gradient")
    torch.testing.assert_close(fm.gradcam(model, x, 1, layer="2", noise_at="input", sigma=1e-6, n=4), plain,
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("options,message", [(dict(noise_at="input"), "need layer="),
                                             (dict(layer="2", noise_at="output"), "noise_at must be one of")])
def test_noise_at_bad_input(options, message):
    with pytest.raises(ValueError, match=message):
        fm.smoothgrad(cnn(), torch.rand(1, 3, 8, 8), 1, **options)
