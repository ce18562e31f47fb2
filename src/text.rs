//! Text folding shared by lookups: lower case, accents removed, punctuation turned into spaces.

/// Folds `input` for accent-, case- and punctuation-insensitive comparison:
/// « Saint-Étienne » and « saint etienne » fold to the same string.
pub fn fold(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    fold_into(&mut out, input);
    out
}

/// Appends the folding of `input` to `out` (see [`fold`]), without allocating for it: bulk
/// loads fold millions of names into one buffer.
pub fn fold_into(out: &mut String, input: &str) {
    let start = out.len();
    let mut pending_space = false;
    for c in input.chars() {
        // Most names are ASCII: no table to look up for those letters.
        if c.is_ascii_alphanumeric() {
            if pending_space && out.len() > start {
                out.push(' ');
            }
            pending_space = false;
            out.push(c.to_ascii_lowercase());
            continue;
        }
        let base: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => {
                "a"
            }
            'ç' | 'Ç' => "c",
            'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
            'ñ' | 'Ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
            'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "y",
            'œ' | 'Œ' => "oe",
            'æ' | 'Æ' => "ae",
            c if c.is_alphanumeric() => {
                if pending_space && out.len() > start {
                    out.push(' ');
                }
                pending_space = false;
                out.extend(c.to_lowercase());
                continue;
            }
            _ => {
                pending_space = true;
                continue;
            }
        };
        if pending_space && out.len() > start {
            out.push(' ');
        }
        pending_space = false;
        out.push_str(base);
    }
}

#[cfg(test)]
mod tests {
    use super::{fold, fold_into};

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(fold("Saint-Étienne"), "saint etienne");
        assert_eq!(fold("  Clermont--Ferrand "), "clermont ferrand");
        assert_eq!(fold("Œuvre d'Art"), "oeuvre d art");
        assert_eq!(fold("Châtel-Guyon"), fold("chatel guyon"));
        let mut buffer = String::from("x");
        fold_into(&mut buffer, " -Été");
        assert_eq!(buffer, "xete");
    }
}
