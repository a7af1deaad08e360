"""Instance vote: one class per component, no class twice in a frame, a one-frame flip fixed across frames."""
import numpy as np
import torch

from tools.data.classes import NUM_CLASSES, class_id
from tools.predict.instance_vote import build_tracks, frame_components, instance_vote

H, W = 24, 32
RED_CUBE = class_id("cube", "rubber", "red")
RED_SPHERE = class_id("sphere", "rubber", "red")
BLUE_CUBE = class_id("cube", "rubber", "blue")
GREEN_CYLINDER = class_id("cylinder", "metal", "green")


def _scores(frames: int = 1) -> torch.Tensor:
    """Log-probability-like scores: background certain everywhere."""
    scores = torch.full((frames, NUM_CLASSES, H, W), -10.0)
    scores[:, 0] = 0.0
    return scores


def _paint(scores: torch.Tensor, frame: int, rows: slice, cols: slice, preferences: dict[int, float]) -> None:
    """Make a box foreground with the given class scores (others stay at -10)."""
    scores[frame, 0, rows, cols] = -10.0
    for cls, value in preferences.items():
        scores[frame, cls, rows, cols] = value


def test_each_component_takes_one_class_and_no_class_is_given_twice_in_a_frame():
    scores = _scores()
    # Left blob: most pixels say red cube, a stripe says red sphere -> one class for the whole blob.
    _paint(scores, 0, slice(2, 10), slice(2, 10), {RED_CUBE: 0.0, RED_SPHERE: -1.0})
    scores[0, RED_SPHERE, 2:4, 2:10], scores[0, RED_CUBE, 2:4, 2:10] = 0.0, -1.0
    # Right blob: also prefers red cube, less strongly; red sphere is its second choice.
    _paint(scores, 0, slice(12, 20), slice(20, 28), {RED_CUBE: -0.3, RED_SPHERE: -0.5})
    mask = instance_vote(scores[0])
    left, right = mask[2:10, 2:10], mask[12:20, 20:28]
    assert left.unique().tolist() == [RED_CUBE]
    assert right.unique().tolist() == [RED_SPHERE]  # the claim went to the more likely blob
    assert (mask[scores[0, 0] == 0] == 0).all()
    labels = frame_components(scores[0].log_softmax(0).numpy())
    for component in range(1, labels.max() + 1):
        assert len(np.unique(mask.numpy()[labels == component])) == 1


def test_touching_objects_of_different_colours_stay_apart():
    scores = _scores()
    _paint(scores, 0, slice(4, 12), slice(4, 12), {RED_CUBE: 0.0})
    _paint(scores, 0, slice(4, 12), slice(12, 20), {BLUE_CUBE: 0.0})  # shares an edge with the red cube
    mask = instance_vote(scores[0])
    assert mask[4:12, 4:12].unique().tolist() == [RED_CUBE]
    assert mask[4:12, 12:20].unique().tolist() == [BLUE_CUBE]
    merged = instance_vote(scores[0], split="none")  # plain foreground components would merge them
    assert len(merged[4:12, 4:20].unique()) == 1


def test_vote_across_frames_fixes_a_one_frame_flip():
    scores = _scores(5)
    for frame in range(5):
        cols = slice(4 + frame, 12 + frame)  # the object moves one pixel per frame: overlaps link the frames
        flipped = frame == 2
        _paint(scores, frame, slice(6, 14), cols,
               {GREEN_CYLINDER: -1.0 if flipped else -0.2, BLUE_CUBE: -0.2 if flipped else -1.5})
    per_frame = instance_vote(scores, link_frames=False)
    assert per_frame[2].max() == BLUE_CUBE  # the flip, as a per-frame decision sees it
    linked = instance_vote(scores, link_frames=True)
    for frame in range(5):
        assert linked[frame][6:14, 4 + frame:12 + frame].unique().tolist() == [GREEN_CYLINDER]
    assert torch.equal(linked, instance_vote(scores, link_frames=True))  # deterministic


def test_linked_tracks_hold_one_component_per_frame_and_fragments_are_absorbed():
    scores = _scores(2)
    _paint(scores, 0, slice(4, 12), slice(4, 12), {RED_CUBE: 0.0})
    _paint(scores, 1, slice(4, 12), slice(6, 14), {RED_CUBE: 0.0})
    _paint(scores, 1, slice(4, 6), slice(14, 16), {BLUE_CUBE: 0.0})  # a 4-pixel sliver of another colour
    kept = instance_vote(scores, min_pixels=1)
    assert BLUE_CUBE in kept[1].unique().tolist()
    cleaned = instance_vote(scores, min_pixels=8)
    assert cleaned[1][4:6, 14:16].unique().tolist() == [RED_CUBE]  # joined the object it touches
    labels = [frame_components(f.log_softmax(0).numpy()) for f in scores]
    tracks = build_tracks(labels, link=True)
    assert all(len({frame for frame, _ in track}) == len(track) for track in tracks)


def test_predict_frame22_mask_votes_each_sample_then_takes_the_majority():
    from tools.predict.grid_route import frame22_mask

    scores = _scores(3)
    for sample in range(3):
        second = RED_SPHERE if sample == 2 else RED_CUBE  # one sample prefers the sphere on half the blob
        _paint(scores, sample, slice(4, 12), slice(4, 12), {RED_CUBE: 0.0, RED_SPHERE: -1.0})
        scores[sample, second, 4:8, 4:12] = 0.5
    plain = frame22_mask(scores, None, (H, W))
    voted = frame22_mask(scores, None, (H, W), vote_min_pixels=1)
    assert voted.dtype == torch.uint8 and voted[4:12, 4:12].unique().tolist() == [RED_CUBE]
    assert plain[4:12, 4:12].unique().tolist() == [RED_CUBE]  # majority over samples already agrees here
    single = frame22_mask(scores[2:], None, (H, W), vote_min_pixels=1)
    assert len(single[4:12, 4:12].unique()) == 1  # the vote keeps one class for the object


def test_a_suppressed_class_is_never_given_the_component_left_without_one_becomes_background():
    from tools.predict.postprocess import suppress_absent_logits

    scores = _scores()
    _paint(scores, 0, slice(2, 10), slice(2, 10), {RED_CUBE: 0.0, RED_SPHERE: -1.0})
    _paint(scores, 0, slice(12, 20), slice(20, 28), {RED_CUBE: -0.3, RED_SPHERE: -0.5})
    allowed = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    allowed[[0, RED_CUBE]] = True  # red sphere (and all else) absent from the observed frames
    mask = instance_vote(suppress_absent_logits(scores[0], allowed))
    assert mask[2:10, 2:10].unique().tolist() == [RED_CUBE]
    assert mask[12:20, 20:28].unique().tolist() == [0]  # its only allowed class is held by the likelier blob
    assert set(mask.unique().tolist()) <= {0, RED_CUBE}


def test_a_contact_edge_cuts_touching_objects_of_one_colour_apart():
    scores = _scores()
    _paint(scores, 0, slice(4, 14), slice(4, 14), {RED_CUBE: 0.0, RED_SPHERE: -0.5})
    _paint(scores, 0, slice(4, 14), slice(14, 24), {RED_SPHERE: 0.0, RED_CUBE: -0.5})  # same colour, touching
    merged = instance_vote(scores[0])
    assert len(merged[4:14, 4:24].unique()) == 1  # one colour region: one class for both objects
    edges = torch.zeros(H, W)
    edges[4:14, 13:15] = 0.9  # the contact edge, both sides
    cut = instance_vote(scores[0], edges=edges)
    assert cut[4:14, 4:13].unique().tolist() == [RED_CUBE]
    assert cut[4:14, 15:24].unique().tolist() == [RED_SPHERE]
    assert set(cut[4:14, 13:15].unique().tolist()) == {RED_CUBE, RED_SPHERE}  # the edge joins its nearest piece
    assert (cut[scores[0, 0] == 0] == 0).all()
    assert torch.equal(instance_vote(scores[0], edges=edges, edge_threshold=0.95), merged)  # below threshold
    partial = edges.clone()
    partial[4:8] = 0.0  # an edge that does not cut the region in two changes nothing
    assert torch.equal(instance_vote(scores[0], edges=partial), merged)
    one_object = _scores()
    _paint(one_object, 0, slice(4, 14), slice(4, 24), {RED_CUBE: 0.0, RED_SPHERE: -0.5})
    assert torch.equal(instance_vote(one_object[0], edges=edges), instance_vote(one_object[0]))  # an inner edge:
    # both pieces would be red cubes, so the cut is undone instead of giving one half the next best class
    sliver = torch.zeros(H, W)
    sliver[4:14, 20] = 0.9  # would cut off a 30-pixel sliver: pieces under min_piece stay joined
    labels = frame_components(scores[0].log_softmax(0).numpy(), edge=sliver.numpy(), min_piece=40)
    assert labels.max() == 1


def test_with_an_edge_map_a_wavering_colour_stays_one_object_and_edges_split_touching_objects():
    scores = _scores()
    # One red cube whose colour wavers: a stripe where blue cube wins. Split by colour it would be two
    # components, and the stripe would take some other class.
    _paint(scores, 0, slice(4, 14), slice(4, 14), {RED_CUBE: 0.0, BLUE_CUBE: -1.0})
    scores[0, BLUE_CUBE, 8:10, 4:14], scores[0, RED_CUBE, 8:10, 4:14] = 0.0, -0.5
    no_edges = torch.zeros(H, W)
    assert instance_vote(scores[0], edges=no_edges)[4:14, 4:14].unique().tolist() == [RED_CUBE]
    # Without an edge map, split by colour: above, stripe and below each take a class of their own.
    assert len(instance_vote(scores[0])[4:14, 4:14].unique()) == 3
    # Touching objects of two colours: with an edge map, the edge (not the colour) keeps them apart.
    touching = _scores()
    _paint(touching, 0, slice(4, 12), slice(4, 12), {RED_CUBE: 0.0})
    _paint(touching, 0, slice(4, 12), slice(12, 20), {BLUE_CUBE: 0.0})
    assert len(instance_vote(touching[0], edges=no_edges)[4:12, 4:20].unique()) == 1
    edge = no_edges.clone()
    edge[4:12, 11:13] = 0.9
    apart = instance_vote(touching[0], edges=edge)
    assert apart[4:12, 4:11].unique().tolist() == [RED_CUBE] and apart[4:12, 13:20].unique().tolist() == [BLUE_CUBE]
