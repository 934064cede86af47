//! The SVG pictures: well-formed (a tiny XML checker), tick labels at 1-2-5 values computed here
//! by hand for known ranges, the y-axis rule, a one-point curve inside its frame, two-panel
//! training curves, and the image grid's true labels and marked mistakes.

use handgrad::model::History;
use handgrad::viz::{image_grid_svg, line_chart_svg, training_curves_svg, Caption};
use handgrad::Tensor;
use ndarray::IxDyn;
use std::collections::{BTreeMap, HashMap};

/// One element of a parsed SVG: its name, attributes and direct text.
#[derive(Debug)]
struct Node {
    name: String,
    attrs: HashMap<String, String>,
    text: String,
}

impl Node {
    fn attr(&self, k: &str) -> &str {
        self.attrs
            .get(k)
            .unwrap_or_else(|| panic!("<{}> has no {k}: {self:?}", self.name))
    }
    fn num(&self, k: &str) -> f64 {
        self.attr(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} of {self:?}"))
    }
    fn class(&self) -> &str {
        self.attrs.get("class").map_or("", String::as_str)
    }
}

/// Parses `svg`, panicking unless it is well-formed: one root, every tag closed in order,
/// quoted attributes, no stray `<` or unescaped `&`. Returns the elements in document order.
fn parse_svg(svg: &str) -> Vec<Node> {
    let b = svg.as_bytes();
    let (mut i, mut stack, mut nodes, mut roots) = (0, Vec::<(String, usize)>::new(), vec![], 0);
    let check_text = |t: &str| {
        let mut rest = t;
        while let Some(p) = rest.find('&') {
            let ent = &rest[p..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "unescaped & in {t:?}"
            );
            rest = &rest[p + 1..];
        }
    };
    while i < b.len() {
        if b[i] != b'<' {
            let end = svg[i..].find('<').map_or(b.len(), |p| i + p);
            let text = &svg[i..end];
            check_text(text);
            if let Some(&(_, k)) = stack.last() {
                let node: &mut Node = &mut nodes[k];
                node.text.push_str(text);
            } else {
                assert!(text.trim().is_empty(), "text outside the root: {text:?}");
            }
            i = end;
            continue;
        }
        let end = i + svg[i..].find('>').expect("unclosed <");
        let tag = &svg[i + 1..end];
        assert!(!tag.contains('<'), "stray < in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            let (open, _) = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name, "<{open}> closed by </{name}>");
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            let name = body[..name_end].to_string();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad tag name in <{tag}>"
            );
            let mut attrs = HashMap::new();
            let mut rest = body[name_end..].trim_start();
            while !rest.is_empty() {
                let eq = rest
                    .find('=')
                    .unwrap_or_else(|| panic!("attribute without = in <{tag}>"));
                let key = rest[..eq].trim().to_string();
                let after = &rest[eq + 1..];
                assert!(after.starts_with('"'), "unquoted {key} in <{tag}>");
                let close = after[1..].find('"').expect("unclosed quote");
                let value = &after[1..1 + close];
                check_text(value);
                assert!(
                    attrs.insert(key.clone(), value.to_string()).is_none(),
                    "{key} twice"
                );
                rest = after[close + 2..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            nodes.push(Node {
                name: name.clone(),
                attrs,
                text: String::new(),
            });
            if !self_closing {
                stack.push((name, nodes.len() - 1));
            }
        }
        i = end + 1;
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
    assert_eq!(nodes[0].name, "svg");
    nodes
}

fn texts<'a>(nodes: &'a [Node], class: &str) -> Vec<&'a str> {
    nodes
        .iter()
        .filter(|n| n.name == "text" && n.class() == class)
        .map(|n| n.text.as_str())
        .collect()
}

fn of_class<'a>(nodes: &'a [Node], class: &str) -> Vec<&'a Node> {
    nodes.iter().filter(|n| n.class() == class).collect()
}

/// The picture's `viewBox` as `(width, height)`.
fn view_box(nodes: &[Node]) -> (f64, f64) {
    let v: Vec<f64> = nodes[0]
        .attr("viewBox")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(&v[..2], &[0.0, 0.0]);
    (v[2], v[3])
}

fn inside(n: &Node, frame: &Node) -> bool {
    let (cx, cy) = (n.num("cx"), n.num("cy"));
    let (x, y) = (frame.num("x"), frame.num("y"));
    let (w, h) = (frame.num("width"), frame.num("height"));
    cx > x && cx < x + w && cy > y && cy < y + h
}

fn epochs(values: &[f32]) -> Vec<(f32, f32)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f32, v))
        .collect()
}

#[test]
fn a_loss_from_2_3_to_0_3_gets_ticks_from_0_to_2_5_and_labelled_axes() {
    let svg = line_chart_svg(
        "training",
        "epoch",
        "loss",
        &[("loss", epochs(&[2.3, 1.1, 0.3]))],
    );
    let nodes = parse_svg(&svg);
    // By hand: every value ≥ 0 and 0.3 ≤ 2.3 / 2, so the axis starts at 0; the top gets 5 %
    // headroom, 2.415; 2.415 / 5 intervals = 0.483, and the next 1-2-5 step is 0.5; 2.415
    // rounds up to 2.5.
    assert_eq!(
        texts(&nodes, "y-tick"),
        ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]
    );
    // x: epochs 1..3 with 3 % margins (0.94..3.06); 2.12 / 6 = 0.35 would give 0.5, but whole
    // epochs take steps of at least 1.
    assert_eq!(texts(&nodes, "x-tick"), ["1", "2", "3"]);
    assert_eq!(texts(&nodes, "x-label"), ["epoch"]);
    assert_eq!(texts(&nodes, "y-label"), ["loss"]);
    // one grid line and one tick mark per tick on each axis
    assert_eq!(of_class(&nodes, "grid").len(), 6 + 3);
    assert_eq!(of_class(&nodes, "tick").len(), 6 + 3);
    // the 0 tick is the bottom of the frame, the 2.5 tick its top
    let frame = of_class(&nodes, "frame")[0];
    let grid_y: Vec<f64> = of_class(&nodes, "grid")
        .iter()
        .filter(|n| n.attr("y1") == n.attr("y2"))
        .map(|n| n.num("y1"))
        .collect();
    let (top, bottom) = (frame.num("y"), frame.num("y") + frame.num("height"));
    assert!((grid_y[0] - bottom).abs() < 0.11, "{grid_y:?} vs {bottom}");
    assert!((grid_y[5] - top).abs() < 0.11, "{grid_y:?} vs {top}");
    // three markers, all inside the frame
    let markers = of_class(&nodes, "marker");
    assert_eq!(markers.len(), 3);
    assert!(markers.iter().all(|m| inside(m, frame)));
    assert_eq!(nodes.iter().filter(|n| n.name == "polyline").count(), 1);
}

#[test]
fn values_far_from_zero_do_not_start_at_zero_nor_at_their_minimum() {
    let svg = line_chart_svg("t", "step", "loss", &[("loss", epochs(&[2.3, 2.2, 2.1]))]);
    let nodes = parse_svg(&svg);
    // By hand: 2.1 > 2.3 / 2, so no 0; 5 % of the spread 0.2 below and above: 2.09..2.31;
    // 0.22 / 5 = 0.044 → step 0.05; rounded out: 2.05..2.35.
    assert_eq!(
        texts(&nodes, "y-tick"),
        ["2.05", "2.10", "2.15", "2.20", "2.25", "2.30", "2.35"]
    );
    // negative values mirror the rule: the axis ends at 0
    let svg = line_chart_svg("t", "x", "y", &[("s", epochs(&[-4.0, -1.0]))]);
    let labels = texts(&parse_svg(&svg), "y-tick").join(" ");
    assert_eq!(labels, "-5 -4 -3 -2 -1 0");
    // large steps: 0..700 → ticks every 200
    let steps: Vec<(f32, f32)> = (1..=700).map(|s| (s as f32, 1.0 / s as f32)).collect();
    let nodes = parse_svg(&line_chart_svg("t", "step", "loss", &[("loss", steps)]));
    assert_eq!(texts(&nodes, "x-tick"), ["0", "200", "400", "600"]);
    // more than 50 points: no markers, one polyline
    assert!(of_class(&nodes, "marker").is_empty());
}

#[test]
fn ticks_are_1_2_5_steps_covering_the_data_for_many_ranges() {
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for case in 0..300 {
        let scale = 10f64.powi((next() * 12.0) as i32 - 6);
        let lo = (next() * 2.0 - 0.5) * scale;
        let hi = lo + next() * scale + 1e-3 * scale;
        let pts = vec![(1.0, lo as f32), (2.0, hi as f32)];
        let (lo, hi) = (lo as f32 as f64, hi as f32 as f64);
        let nodes = parse_svg(&line_chart_svg("t", "x", "y", &[("s", pts)]));
        let ticks: Vec<f64> = texts(&nodes, "y-tick")
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(
            (3..=12).contains(&ticks.len()),
            "case {case}: {lo}..{hi}: {ticks:?}"
        );
        let step = ticks[1] - ticks[0];
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!(
            [1.0, 2.0, 5.0, 10.0]
                .iter()
                .any(|m| (mantissa - m).abs() < 1e-6),
            "case {case}: step {step} of {ticks:?}"
        );
        for w in ticks.windows(2) {
            assert!(
                ((w[1] - w[0]) - step).abs() < 1e-6 * step,
                "case {case}: {ticks:?}"
            );
        }
        let (first, last) = (ticks[0], *ticks.last().unwrap());
        assert!(
            first <= lo && last >= hi,
            "case {case}: {lo}..{hi} in {ticks:?}"
        );
        if lo >= 0.0 && lo <= hi / 2.0 {
            assert_eq!(first, 0.0, "case {case}: {lo}..{hi}: {ticks:?}");
        } else if lo > 0.0 {
            assert!(
                first > 0.0 && first < lo,
                "case {case}: {lo}..{hi}: {ticks:?}"
            );
        }
    }
}

#[test]
fn a_one_epoch_curve_is_a_marker_inside_the_frame() {
    let svg = line_chart_svg("one epoch", "epoch", "loss", &[("loss", vec![(1.0, 0.7)])]);
    let nodes = parse_svg(&svg);
    let (w, h) = view_box(&nodes);
    let frame = of_class(&nodes, "frame")[0];
    let markers = of_class(&nodes, "marker");
    assert_eq!(markers.len(), 1);
    let m = markers[0];
    assert!(inside(m, frame), "{m:?} outside {frame:?}");
    assert!(m.num("cx") > 0.0 && m.num("cx") < w && m.num("cy") > 0.0 && m.num("cy") < h);
    // in the middle of the x axis, which is labelled 0, 1, 2
    let mid = frame.num("x") + frame.num("width") / 2.0;
    assert!((m.num("cx") - mid).abs() < 0.11, "{} vs {mid}", m.num("cx"));
    assert_eq!(texts(&nodes, "x-tick"), ["0", "1", "2"]);
    // a single value: the axis starts at 0 and ends above it
    assert_eq!(texts(&nodes, "y-tick").first(), Some(&"0.0"));
    assert!(m.num("cy") > frame.num("y") + 1.0);
    // no data at all still draws a labelled frame
    let nodes = parse_svg(&line_chart_svg("empty", "x", "y", &[("s", vec![])]));
    assert_eq!(of_class(&nodes, "frame").len(), 1);
    assert!(nodes.iter().any(|n| n.text == "no data"));
}

fn history(epochs: usize) -> History {
    let mut h = BTreeMap::new();
    let curve = |f: fn(f32) -> f32| (0..epochs).map(|i| f(i as f32)).collect::<Vec<f32>>();
    h.insert("loss".to_string(), curve(|i| 1.0 / (i + 1.0)));
    h.insert("val_loss".to_string(), curve(|i| 1.2 / (i + 1.0)));
    h.insert("accuracy".to_string(), curve(|i| 0.6 + 0.05 * i));
    h.insert("val_accuracy".to_string(), curve(|i| 0.55 + 0.05 * i));
    History { history: h }
}

#[test]
fn training_curves_put_loss_and_accuracy_in_two_panels() {
    let nodes = parse_svg(&training_curves_svg("CNN", &history(4)));
    let frames = of_class(&nodes, "frame");
    assert_eq!(frames.len(), 2);
    assert!(frames[0].num("x") + frames[0].num("width") < frames[1].num("x"));
    assert_eq!(texts(&nodes, "y-label"), ["loss", "accuracy"]);
    assert_eq!(texts(&nodes, "x-label"), ["epoch", "epoch"]);
    assert_eq!(
        texts(&nodes, "legend"),
        ["loss", "val_loss", "accuracy", "val_accuracy"]
    );
    // By hand: losses 0.25..1.2 start at 0 (0.25 ≤ 0.6); 1.26 / 5 = 0.252 → step 0.5, up to
    // 1.5. Accuracies 0.55..0.75 are far from 0 (0.55 > 0.375): 0.54..0.76 → step 0.05
    // (0.22 / 5 = 0.044), rounded out to 0.50..0.80.
    let ys = texts(&nodes, "y-tick");
    let split = ys.iter().position(|&t| t == "1.5").unwrap() + 1;
    assert_eq!(&ys[..split], ["0.0", "0.5", "1.0", "1.5"]);
    assert_eq!(
        &ys[split..],
        ["0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80"]
    );
    // each panel's markers lie inside its own frame
    let markers = of_class(&nodes, "marker");
    assert_eq!(markers.len(), 16);
    assert!(markers[..8].iter().all(|m| inside(m, frames[0])));
    assert!(markers[8..].iter().all(|m| inside(m, frames[1])));

    // one epoch: four single points, each inside its panel
    let nodes = parse_svg(&training_curves_svg("CNN", &history(1)));
    let frames = of_class(&nodes, "frame");
    let markers = of_class(&nodes, "marker");
    assert_eq!(markers.len(), 4);
    assert!(markers[..2].iter().all(|m| inside(m, frames[0])));
    assert!(markers[2..].iter().all(|m| inside(m, frames[1])));
    assert_eq!(nodes.iter().filter(|n| n.name == "polyline").count(), 0);

    // without accuracy, one panel
    let mut h = history(3);
    h.history.retain(|k, _| k.ends_with("loss"));
    let nodes = parse_svg(&training_curves_svg("MLP", &h));
    assert_eq!(of_class(&nodes, "frame").len(), 1);
}

#[test]
fn the_grid_shows_true_labels_and_marks_mistakes() {
    // image i is uniformly i: 0 → black, 1 → grey #808080, 2 → white
    let img = Tensor::from_shape_fn(IxDyn(&[3, 1, 2, 2]), |d| d[0] as f32);
    let long = "a very long class name indeed";
    let captions = [
        Caption::new("cat").truth("cat"),
        Caption::new("dog").probability(0.9).truth("cat"),
        Caption::new(long).truth(long),
    ];
    let svg = image_grid_svg(&img, &captions, 5, 3).unwrap();
    let nodes = parse_svg(&svg);
    let mistakes = of_class(&nodes, "mistake");
    assert_eq!(mistakes.len(), 1, "one wrong prediction");
    let frame = mistakes[0];
    assert_eq!(frame.attr("stroke"), "#d62728");
    // the red frame surrounds exactly the grey image's pixels
    let within = |n: &Node| {
        let (x, y) = (n.num("x"), n.num("y"));
        x >= frame.num("x")
            && x + n.num("width") <= frame.num("x") + frame.num("width")
            && y >= frame.num("y")
            && y + n.num("height") <= frame.num("y") + frame.num("height")
    };
    let pixels: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name == "rect" && n.attrs.contains_key("x") && n.class().is_empty())
        .collect();
    assert_eq!(pixels.len(), 3 * 4);
    for p in &pixels {
        assert_eq!(
            within(p),
            p.attr("fill") == "#808080",
            "{p:?} vs the frame {frame:?}"
        );
    }
    assert_eq!(
        texts(&nodes, "predicted"),
        ["cat", "dog 90%", "a very long class name indeed"]
    );
    assert_eq!(
        texts(&nodes, "truth"),
        [
            "true: cat",
            "true: cat",
            "true: a very long class name indeed"
        ]
    );
    let fills: Vec<&str> = nodes
        .iter()
        .filter(|n| n.class() == "predicted" || n.class() == "truth")
        .map(|n| n.attr("fill"))
        .collect();
    assert_eq!(fills[2..4], ["#d62728", "#d62728"]);
    assert!(fills[..2]
        .iter()
        .chain(&fills[4..])
        .all(|f| *f != "#d62728"));
    assert_eq!(
        texts(&nodes, "summary")[0].split(" (").next(),
        Some("1 of 3 wrong")
    );
    // cells are wide enough for the longest caption (8 px a character)
    let (w, _) = view_box(&nodes);
    assert!(w >= 3.0 * (long.len() + 6) as f64 * 8.0, "{w}");
}

#[test]
fn grid_captions_are_escaped_optional_and_checked() {
    let img = Tensor::from_shape_fn(IxDyn(&[2, 3, 2, 2]), |d| (d[1] + d[3]) as f32);
    let svg = image_grid_svg(&img, &[Caption::new("a<b&c"), Caption::new("d")], 2, 2).unwrap();
    let nodes = parse_svg(&svg);
    assert!(svg.contains("a&lt;b&amp;c"));
    assert!(of_class(&nodes, "mistake").is_empty() && texts(&nodes, "summary").is_empty());
    let plain = parse_svg(&image_grid_svg(&img, &[], 1, 1).unwrap());
    assert!(texts(&plain, "predicted").is_empty());
    let err = |r: handgrad::Result<String>| r.unwrap_err().to_string();
    assert_eq!(
        err(image_grid_svg(&img, &[Caption::new("x")], 1, 1)),
        "image_grid_svg: invalid captions = 1; expected one per image (2) or none"
    );
    assert!(err(image_grid_svg(&img, &[], 0, 1)).contains("invalid scale = 0"));
    assert!(err(image_grid_svg(&img, &[], 1, 0)).contains("invalid cols = 0"));
    assert!(
        err(image_grid_svg(&Tensor::zeros(IxDyn(&[2, 3])), &[], 1, 1))
            .contains("image_grid_svg expects images (N, 1 or 3, H, W)")
    );
}
