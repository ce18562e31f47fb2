//! French phone numbers: parsed from the ways people write them, stored as E.164, shown as `04 73 00 00 00`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A French phone number: E.164 (`+33473000000`, overseas `+262…`, `+590…`, …) or a short
/// service number (`3646`, `115`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

/// Overseas national prefixes (after the leading 0) and their country calling codes.
const OVERSEAS: &[(&str, &str)] = &[
    ("262", "262"),
    ("692", "262"),
    ("693", "262"),
    ("269", "262"),
    ("639", "262"),
    ("590", "590"),
    ("690", "590"),
    ("691", "590"),
    ("594", "594"),
    ("694", "594"),
    ("596", "596"),
    ("696", "596"),
    ("697", "596"),
];

const CALLING_CODES: &[&str] = &["33", "262", "590", "594", "596", "269"];

impl Phone {
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        let mut digits: String = trimmed
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-' | '/' | '\u{a0}' | '(' | ')'))
            .collect();
        // « +33 (0)4 73 … »: the bracketed trunk zero is not dialled from abroad.
        if trimmed.contains("(0)") {
            digits = digits.replacen("+330", "+33", 1);
        }
        if let Some(rest) = digits.strip_prefix("00") {
            digits = format!("+{rest}");
        }
        let error = || {
            format!("« {input} » n'est pas un numéro de téléphone français (ex. 04 73 00 00 00)")
        };
        if let Some(international) = digits.strip_prefix('+') {
            if !international.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            let code = CALLING_CODES
                .iter()
                .find(|code| international.starts_with(*code))
                .ok_or_else(error)?;
            let national = &international[code.len()..];
            if national.len() != 9 || national.starts_with('0') {
                return Err(error());
            }
            // Mayotte's own calling code +269 is written +262 since 2007.
            let code = if *code == "269" { "262" } else { code };
            return Ok(Self(format!("+{code}{national}")));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        match digits.len() {
            10 if digits.starts_with('0') && !digits.starts_with("00") => {
                let national = &digits[1..];
                let code = OVERSEAS
                    .iter()
                    .find(|(prefix, _)| national.starts_with(prefix))
                    .map_or("33", |(_, code)| code);
                Ok(Self(format!("+{code}{national}")))
            }
            // Short numbers: emergency (15, 17, 18, 112, 114, 115, 119…) and 4-digit service
            // numbers (3646 Assurance maladie, 3949 France Travail…).
            2 if matches!(digits.as_str(), "15" | "17" | "18") => Ok(Self(digits)),
            3 if digits.starts_with('1') => Ok(Self(digits)),
            4 if digits.starts_with('3') => Ok(Self(digits)),
            6 if digits.starts_with("116") => Ok(Self(digits)),
            _ => Err(error()),
        }
    }

    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The national display form: `04 73 00 00 00`, `02 62 12 34 56`, or the short number as is.
    pub fn national(&self) -> String {
        let Some(international) = self.0.strip_prefix('+') else {
            return self.0.clone();
        };
        // Overseas national numbers start with the territory's prefix already
        // (+262 262 12 34 56 → 02 62 12 34 56), so every code drops the same way.
        let national = CALLING_CODES
            .iter()
            .find(|c| international.starts_with(*c))
            .map_or(international, |c| &international[c.len()..]);
        format!("0{national}")
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Phone> for String {
    fn from(phone: Phone) -> String {
        phone.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.national())
    }
}

/// Several numbers in one field, separated by `;`, `,` or ` / `.
pub fn parse_list(input: &str) -> Result<Vec<Phone>, String> {
    input
        .split([';', ','])
        .flat_map(|part| part.split(" / "))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Phone::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_ways_of_writing() {
        for input in [
            "04 73 00 00 00",
            "0473000000",
            "04.73.00.00.00",
            "+33 4 73 00 00 00",
            "+33 (0)4 73 00 00 00",
            "0033473000000",
        ] {
            assert_eq!(
                Phone::parse(input).unwrap().e164(),
                "+33473000000",
                "{input}"
            );
        }
        assert_eq!(
            Phone::parse("04 73 00 00 00").unwrap().national(),
            "04 73 00 00 00"
        );
    }

    #[test]
    fn overseas_numbers() {
        let reunion = Phone::parse("0262 12 34 56").unwrap();
        assert_eq!(reunion.e164(), "+262262123456");
        assert_eq!(reunion.national(), "02 62 12 34 56");
        assert_eq!(
            Phone::parse("0696 11 22 33").unwrap().e164(),
            "+596696112233"
        );
        assert_eq!(
            Phone::parse("+262 692 12 34 56").unwrap().national(),
            "06 92 12 34 56"
        );
    }

    #[test]
    fn short_numbers_and_errors() {
        assert_eq!(Phone::parse("3646").unwrap().national(), "3646");
        assert_eq!(Phone::parse("115").unwrap().e164(), "115");
        assert!(Phone::parse("04 73 00 00").is_err());
        assert!(Phone::parse("12").is_err());
        assert_eq!(Phone::parse("116 000").unwrap().e164(), "116000");
        assert!(Phone::parse("+44 20 7946 0000").is_err());
        assert!(Phone::parse("téléphone").is_err());
        assert_eq!(
            parse_list("04 73 00 00 00; 06 12 34 56 78").unwrap().len(),
            2
        );
    }
}
