// The destinations' counts in the browser, driven by window.TWEET_RULE, which the server builds from
// its own rules (api/curate/counter_rule.py): X's weighted tweet length, the same computation as
// core/tweet_text.weighted_length (twitter-text's parse_tweet); Mastodon's count, as
// core/tweet_text.mastodon_length; Bluesky's graphemes and bytes. The server re-checks every save.
"use strict";

(function () {
  const rule = window.TWEET_RULE;
  const compile = (pattern, extraFlags) => new RegExp(pattern.source, pattern.flags + (extraFlags || ""));
  const urlPattern = compile(rule.patterns.url, "gd");
  const asciiDomainPattern = compile(rule.patterns.asciiDomain, "g");
  const tcoUrlPattern = compile(rule.patterns.tcoUrl);
  const invalidPrecedingPattern = compile(rule.patterns.invalidUrlWithoutProtocolPrecedingChars);
  const emojiPattern = compile(rule.patterns.emoji, "g");
  const invalidCharsPattern = compile(rule.patterns.invalidChars);
  const controlCharsPattern = compile(rule.patterns.controlChars);
  const mentionPattern = compile(rule.mastodon.mention, "gd");
  const mentionEndPattern = compile(rule.mastodon.mentionEnd, "y");
  // Extended grapheme clusters, as core.tweet_text.grapheme_count (the regex module's \X) counts them.
  const graphemes = new Intl.Segmenter("en", { granularity: "grapheme" });
  const utf8 = new TextEncoder();
  // Python's str.strip() whitespace (core.tweet_text.normalize_text), which differs from String.trim().
  const pythonSpace = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
  const outerSpace = new RegExp(`^[${pythonSpace}]+|[${pythonSpace}]+$`, "gu");

  // core.tweet_text.normalize_text: NFC, \n line endings, trimmed.
  function normalize(text) {
    return text.normalize("NFC").replace(/\r\n|\r/g, "\n").replace(outerSpace, "");
  }

  const inRanges = (ranges, codePoint) => {
    let low = 0;
    let high = ranges.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (codePoint < ranges[middle][0]) high = middle - 1;
      else if (codePoint > ranges[middle][1]) low = middle + 1;
      else return true;
    }
    return false;
  };
  const tables = rule.nameprep;

  // encodings.idna.nameprep; toLowerCase stands in for RFC 3454's case folding table B.2.
  function nameprep(label) {
    const mapped = Array.from(label)
      .filter((char) => !inRanges(tables.mappedToNothing, char.codePointAt(0)))
      .join("")
      .toLowerCase()
      .normalize("NFKC");
    const codePoints = Array.from(mapped, (char) => char.codePointAt(0));
    if (codePoints.some((codePoint) => inRanges(tables.prohibited, codePoint))) return null;
    const randAL = codePoints.map((codePoint) => inRanges(tables.randAL, codePoint));
    if (randAL.some(Boolean)) {
      if (codePoints.some((codePoint) => inRanges(tables.leftToRight, codePoint))) return null;
      if (!randAL[0] || !randAL[randAL.length - 1]) return null;
    }
    return mapped;
  }

  // RFC 3492 Punycode, as Python's "punycode" codec writes it.
  function punycode(label) {
    const input = Array.from(label, (char) => char.codePointAt(0));
    const basic = input.filter((codePoint) => codePoint < 0x80);
    let output = String.fromCharCode(...basic);
    if (basic.length) output += "-";
    const digit = (d) => String.fromCharCode(d < 26 ? d + 97 : d + 22);
    const adapt = (delta, points, first) => {
      delta = first ? Math.floor(delta / 700) : delta >> 1;
      delta += Math.floor(delta / points);
      let k = 0;
      for (; delta > 455; k += 36) delta = Math.floor(delta / 35);
      return k + Math.floor((36 * delta) / (delta + 38));
    };
    let n = 0x80;
    let delta = 0;
    let bias = 72;
    let handled = basic.length;
    while (handled < input.length) {
      const next = Math.min(...input.filter((codePoint) => codePoint >= n));
      delta += (next - n) * (handled + 1);
      n = next;
      for (const codePoint of input) {
        if (codePoint < n) delta += 1;
        if (codePoint !== n) continue;
        let q = delta;
        for (let k = 36; ; k += 36) {
          const t = k <= bias ? 1 : k >= bias + 26 ? 26 : k - bias;
          if (q < t) break;
          output += digit(t + ((q - t) % (36 - t)));
          q = Math.floor((q - t) / (36 - t));
        }
        output += digit(q);
        bias = adapt(delta, handled + 1, handled === basic.length);
        delta = 0;
        handled += 1;
      }
      delta += 1;
      n += 1;
    }
    return output;
  }

  const isAscii = (text) => !/[^\x00-\x7f]/.test(text);

  // encodings.idna.ToASCII for one label, or null where Python raises.
  function labelToAscii(label) {
    let ascii = label;
    if (!isAscii(ascii)) {
      const prepared = nameprep(label);
      if (prepared === null) return null;
      if (isAscii(prepared)) ascii = prepared;
      else if (prepared.startsWith("xn--")) return null;
      else ascii = `xn--${punycode(prepared)}`;
    }
    return ascii.length > 0 && ascii.length < 64 ? ascii : null;
  }

  // domain.encode("idna") in Python, or null where it raises.
  function idnaDomain(domain) {
    if (isAscii(domain)) {
      const labels = domain.split(".");
      const last = labels.pop();
      return labels.every((label) => label.length > 0 && label.length < 64) && last.length < 64 ? domain : null;
    }
    const labels = domain.split(/[.\u3002\uff0e\uff61]/);
    const trailingDot = labels.length > 1 && labels[labels.length - 1] === "" ? "." : "";
    if (trailingDot) labels.pop();
    const encoded = labels.map(labelToAscii);
    return encoded.includes(null) ? null : encoded.join(".") + trailingDot;
  }

  const codePointLength = (text) => Array.from(text).length;

  function isValidUrl(url, protocol, domain) {
    const ascii = idnaDomain(domain);
    if (!ascii) return false;
    const urlLength = codePointLength(url) + ascii.length - codePointLength(domain);
    return protocol.length + urlLength <= rule.maxUrlLength;
  }

  // Python's IGNORECASE matches U+0130 (İ) and U+0131 (ı) with i, JavaScript's does not. The patterns
  // run on a copy with them replaced (same length, so indices hold) and the matches are cut from the original.
  const matchable = (text) => text.replace(/[\u0130\u0131]/g, "i");

  // twitter_text.extract_urls_with_indices, with UTF-16 indices.
  function extractUrls(text, withoutProtocol = true) {
    if (!text.includes(".")) return [];
    const urls = [];
    for (const match of matchable(text).matchAll(urlPattern)) {
      const [before, matchedUrl, protocol, domain, path] = [2, 3, 4, 5, 7].map((n) =>
        match.indices[n] ? text.slice(...match.indices[n]) : undefined
      );
      let url = matchedUrl;
      let end = match.index + match[0].length;
      const start = end - url.length;
      if (!isValidUrl(url, protocol || rule.defaultProtocol, domain)) continue;
      if (!protocol) {
        if (!withoutProtocol || invalidPrecedingPattern.test(before)) continue;
        let last = null;
        for (const ascii of matchable(domain).matchAll(asciiDomainPattern)) {
          const asciiDomain = domain.slice(ascii.index, ascii.index + ascii[0].length);
          last = { url: asciiDomain, start: start + ascii.index, end: start + ascii.index + asciiDomain.length };
          urls.push(last);
        }
        if (last === null) continue;
        if (path) {
          const asciiDomain = last.url;
          last.url = url.replace(domain, () => asciiDomain);
          last.end = end;
        }
      } else {
        const tco = tcoUrlPattern.exec(matchable(url));
        if (tco) {
          if (tco[1] && tco[1].length > rule.maxTcoSlugLength) continue;
          url = url.slice(0, tco[0].length);
          end = start + url.length;
        }
        urls.push({ url, start, end });
      }
    }
    return urls;
  }

  function characterWeight(codePoint) {
    for (const [first, last, weight] of rule.ranges) {
      if (codePoint >= first && codePoint <= last) return weight;
    }
    return rule.defaultWeight;
  }

  // twitter_text.parse_tweet(...).weightedLength of the normalised text.
  function weightedLength(raw) {
    const text = normalize(raw);
    const urlsAt = new Map(extractUrls(text).map((url) => [url.start, url]));
    const emojiAt = new Map(Array.from(text.matchAll(emojiPattern), (match) => [match.index, match[0]]));
    let weight = 0;
    let index = 0;
    while (index < text.length) {
      if (urlsAt.has(index)) {
        weight += rule.transformedUrlLength * rule.scale;
        // Python skips len(url) code points, even where a rewritten URL is shorter than its span.
        for (let skip = codePointLength(urlsAt.get(index).url); skip > 0 && index < text.length; skip -= 1) {
          index += text.codePointAt(index) > 0xffff ? 2 : 1;
        }
      } else if (emojiAt.has(index)) {
        weight += rule.defaultWeight;
        index += emojiAt.get(index).length;
      } else {
        const codePoint = text.codePointAt(index);
        weight += characterWeight(codePoint);
        index += codePoint > 0xffff ? 2 : 1;
      }
    }
    return Math.trunc(weight / rule.scale);
  }

  const graphemeCount = (text) => {
    let count = 0;
    for (const _ of graphemes.segment(text)) count += 1;
    return count;
  };

  // core.tweet_text.mastodon_countable_text: links written with http(s):// as 23 characters,
  // @user@domain as @user; of overlapping finds the earliest is kept.
  function mastodonCountableText(text) {
    const found = [];
    if (text.includes("://")) {
      for (const url of extractUrls(text, false)) found.push([url.start, url.end, "x".repeat(rule.mastodon.urlLength)]);
    }
    if (text.includes("@")) {
      // The mention pattern's \w is a class of Python's word characters, which the i flag widens to
      // U+0345 (it folds to ι): it runs with that mark swapped for U+0300, no word character either.
      for (const match of matchable(text).replace(/\u0345/g, "\u0300").matchAll(mentionPattern)) {
        const end = match.index + match[0].length;
        mentionEndPattern.lastIndex = end;
        if (mentionEndPattern.test(text)) continue;
        found.push([match.index, end, "@" + text.slice(...match.indices[1]).split("@")[0]]);
      }
    }
    found.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let counted = "";
    let position = 0;
    for (const [start, end, replacement] of found) {
      if (start < position) continue;
      counted += text.slice(position, start) + replacement;
      position = end;
    }
    return counted + text.slice(position);
  }

  // core.tweet_text.mastodon_length of the normalised text.
  const mastodonLength = (raw) => graphemeCount(mastodonCountableText(normalize(raw)));

  const NAMES = { x: "X", mastodon: "Mastodon", bluesky: "Bluesky" };
  const formatNumber = (n) => n.toLocaleString("en-US");

  // Each network's count of a normalised text, its limit, and why it would refuse the text (or null).
  const measure = {
    x(text) {
      const length = weightedLength(text);
      const max = rule.maxWeightedLength;
      let problem = null;
      if (length > max) problem = `over ${max}`;
      else if (invalidCharsPattern.test(text)) problem = "has characters X does not allow";
      return { length, max, problem };
    },
    mastodon(text, limits) {
      const length = mastodonLength(text);
      const max = limits.mastodonMaxCharacters;
      return { length, max, problem: length > max ? `over ${max}` : null };
    },
    bluesky(text) {
      const length = graphemeCount(text);
      const max = rule.bluesky.maxGraphemes;
      const bytes = utf8.encode(text).length;
      let problem = null;
      if (length > max) problem = `over ${max}`;
      else if (bytes > rule.bluesky.maxBytes) problem = `${formatNumber(bytes)} bytes, over ${formatNumber(rule.bluesky.maxBytes)}`;
      return { length, max, problem };
    },
  };

  // What the counter shows for a bot posting to `networks` (Mastodon's limit in `limits`): what every
  // destination refuses (core.tweet_text.clean_text), then each destination's count, limit and reason
  // to refuse the text (that common one, or its own; null when it takes it). The server saves a text
  // one destination takes (posting/destinations.py text_rule).
  function check(raw, networks = ["x"], limits = {}) {
    const text = normalize(raw);
    let problem = null;
    const control = text.match(controlCharsPattern);
    if (!text) problem = "empty";
    else if (control) problem = `contains the control character U+${control[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
    else if (rule.markers.some((marker) => text.includes(marker))) problem = "contains a generation marker";
    const destinations = networks.map((network) => {
      const counted = measure[network](text, limits);
      return { network, name: NAMES[network], ...counted, problem: problem || counted.problem };
    });
    return { problem, destinations };
  }

  window.TweetCounter = { normalize, weightedLength, mastodonLength, graphemeCount, check };
})();
