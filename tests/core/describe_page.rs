//! The describe pipeline's HTML page: base64 against RFC 4648, and a page that is well formed,
//! embeds the photos, draws the bars and escapes the names and texts.

use handgrad::describe::{base64, html_page, ClassScore, Description, PageEntry};

fn top() -> Vec<ClassScore> {
    vec![
        ClassScore::new(698, "palace", 0.3012),
        ClassScore::new(442, "bell tower", 0.168),
        ClassScore::new(663, "monastery", 0.004),
    ]
}

/// Checks that every tag is closed in order (void tags written `<… />`); returns the opening
/// tags' names.
fn check_well_formed(html: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let end = after.find('>').expect("a closed tag");
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "a tag without a name: <{tag}>");
        if let Some(closing) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{closing}> closes nothing"));
            assert_eq!(open, name, "</{name}> closes <{open}>");
        } else {
            if !tag.ends_with('/') {
                stack.push(name.clone());
            }
            seen.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    seen
}

#[test]
fn base64_matches_rfc_4648() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want, "{input:?}");
    }
    let all: Vec<u8> = (0..=255).collect();
    let b = base64(&all);
    assert_eq!(b.len(), 344);
    assert!(b.starts_with("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"));
    assert!(b.ends_with("8PHy8/T19vf4+fr7/P3+/w=="));
}

#[test]
fn html_page_embeds_photos_bars_and_texts() {
    let (name, jpeg) = handgrad::vision::sample_photos()[1];
    let bars = top();
    let d = Description {
        classes: bars[..2].to_vec(),
        probabilities: vec![0.3012, 0.168, 0.004],
        message: "Write about a palace.".into(),
        prompt: "<|im_start|>user\nWrite about a palace.".into(),
        text: "A palace & its <tower> \"at dawn\".".into(),
    };
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let entries = [
        PageEntry {
            name,
            image: jpeg,
            bars: &bars,
            description: &d,
        },
        PageEntry {
            name: "tiny <1>.png",
            image: png,
            bars: &bars[..1],
            description: &d,
        },
    ];
    let html = html_page("See & describe", "intro <here>", &entries).unwrap();
    let tags = check_well_formed(&html);
    assert_eq!(tags.iter().filter(|t| *t == "img").count(), 2);
    assert_eq!(tags.iter().filter(|t| *t == "svg").count(), 2);
    assert_eq!(
        tags.iter().filter(|t| *t == "rect").count(),
        4,
        "3 + 1 bars"
    );
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&format!("src=\"data:image/jpeg;base64,{}\"", base64(jpeg))));
    assert!(html.contains(&format!("src=\"data:image/png;base64,{}\"", base64(png))));
    for s in [
        "<title>See &amp; describe</title>",
        "intro &lt;here&gt;",
        ">flower.jpg</h2>",
        ">tiny &lt;1&gt;.png</h2>",
        ">palace</text>",
        ">bell tower</text>",
        ">30 %</text>",
        ">0.4 %</text>",
        "A palace &amp; its &lt;tower&gt; &quot;at dawn&quot;.",
        "&lt;|im_start|&gt;user\nWrite about a palace.",
    ] {
        assert!(html.contains(s), "{s:?} missing");
    }
    // bar lengths follow the probabilities
    assert!(
        html.contains("width=\"66\" height=\"16\" fill=\"#2b6cb0\""),
        "0.3012 × 220"
    );
    let not_an_image = [PageEntry {
        name: "notes.txt",
        image: b"hello",
        bars: &bars,
        description: &d,
    }];
    let e = html_page("t", "i", &not_an_image).unwrap_err().to_string();
    assert!(e.contains("notes.txt") && e.contains("JPEG"), "{e}");
}
