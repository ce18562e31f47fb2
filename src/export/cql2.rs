//! CQL2 text filters (OGC API – Features Part 3): the parser, checked against the queryables,
//! and the evaluation of a parsed filter on one entry.
//!
//! Covered: basic CQL2 (comparisons, `AND`/`OR`/`NOT`, `IS NULL`), `LIKE`, `BETWEEN`, `IN`,
//! `DATE`/`TIMESTAMP` literals, and the spatial functions `S_INTERSECTS`, `S_DISJOINT`,
//! `S_WITHIN`, `S_CONTAINS`, `S_EQUALS` on `POINT`, `MULTIPOINT`, `POLYGON`, `MULTIPOLYGON`
//! and `BBOX` literals. Any other input is an error naming its position, never a panic.

use chrono::{DateTime, Utc};
use geo::{
    Contains, Coord, Intersects, LineString, MultiPoint, MultiPolygon, Point, Polygon, Rect,
};

use super::crs::Crs;

/// Longest filter accepted, in bytes, and deepest nesting: both keep parsing cheap and bounded.
const MAX_LEN: usize = 20_000;
const MAX_DEPTH: usize = 64;

/// The properties a filter may name (`/queryables`), and the geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queryable {
    Id,
    Name,
    Typology,
    Theme,
    Commune,
    Departement,
    Epci,
    Postcode,
    City,
    Wheelchair,
    Source,
    UpdatedAt,
}

impl Queryable {
    pub const ALL: [Queryable; 12] = [
        Queryable::Id,
        Queryable::Name,
        Queryable::Typology,
        Queryable::Theme,
        Queryable::Commune,
        Queryable::Departement,
        Queryable::Epci,
        Queryable::Postcode,
        Queryable::City,
        Queryable::Wheelchair,
        Queryable::Source,
        Queryable::UpdatedAt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Queryable::Id => "id",
            Queryable::Name => "name",
            Queryable::Typology => "typology",
            Queryable::Theme => "theme",
            Queryable::Commune => "insee_code",
            Queryable::Departement => "departement",
            Queryable::Epci => "epci",
            Queryable::Postcode => "postcode",
            Queryable::City => "city",
            Queryable::Wheelchair => "wheelchair",
            Queryable::Source => "source",
            Queryable::UpdatedAt => "updated_at",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Queryable::Id => "Identifiant de la fiche",
            Queryable::Name => "Nom",
            Queryable::Typology => "Typologie (code)",
            Queryable::Theme => "Thème (code)",
            Queryable::Commune => "Code INSEE de la commune",
            Queryable::Departement => "Code du département",
            Queryable::Epci => "SIREN de l'EPCI",
            Queryable::Postcode => "Code postal",
            Queryable::City => "Commune (libellé de l'adresse)",
            Queryable::Wheelchair => "Accessibilité en fauteuil (yes, limited, no, unknown)",
            Queryable::Source => "Organisation source",
            Queryable::UpdatedAt => "Dernière mise à jour",
        }
    }

    pub fn is_timestamp(self) -> bool {
        self == Queryable::UpdatedAt
    }

    fn parse(name: &str) -> Option<Queryable> {
        let name = name.to_ascii_lowercase();
        Queryable::ALL
            .into_iter()
            .find(|q| q.name() == name)
            .or(match name.as_str() {
                "commune" => Some(Queryable::Commune),
                _ => None,
            })
    }
}

/// What a filter needs to know of one entry.
pub trait Subject {
    fn text(&self, property: Queryable) -> Option<&str>;
    fn updated_at(&self) -> Option<DateTime<Utc>>;
    fn point(&self) -> (f64, f64);
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Instant(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    fn flipped(self) -> Self {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            same => same,
        }
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Eq => ordering == Equal,
            CompareOp::Ne => ordering != Equal,
            CompareOp::Lt => ordering == Less,
            CompareOp::Le => ordering != Greater,
            CompareOp::Gt => ordering == Greater,
            CompareOp::Ge => ordering != Less,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpatialOp {
    Intersects,
    Disjoint,
    Within,
    Contains,
    Equals,
}

/// A geometry literal, in WGS84 longitude and latitude.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Points(MultiPoint<f64>),
    Area(MultiPolygon<f64>),
    Rect(Rect<f64>),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Bool(bool),
    Compare(Queryable, CompareOp, Literal),
    Like(Queryable, String),
    Between(Queryable, Literal, Literal),
    In(Queryable, Vec<Literal>),
    IsNull(Queryable),
    Spatial(SpatialOp, Shape),
}

/// A filter that cannot be read: what and where (a 0-based character offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "position {} : {}", self.at, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Quoted(String),
    Text(String),
    Number(f64),
    Op(&'static str),
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| ParseError { at, message };
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(at, format!("chaîne ouverte par {c} jamais fermée"))),
                    Some(&(_, q)) if q == c => {
                        if chars.get(i + 1).map(|p| p.1) == Some(c) {
                            text.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&(_, other)) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push((
                at,
                if c == '\'' {
                    Token::Text(text)
                } else {
                    Token::Quoted(text)
                },
            ));
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || ((c == '-' || c == '+' || c == '.')
                && chars
                    .get(i + 1)
                    .is_some_and(|p| p.1.is_ascii_digit() || p.1 == '.'));
        if starts_number {
            let start = i;
            i += 1;
            while let Some(&(_, d)) = chars.get(i) {
                let exponent_sign = (d == '-' || d == '+')
                    && matches!(chars.get(i - 1).map(|p| p.1), Some('e' | 'E'));
                if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            let text: String = chars[start..i].iter().map(|p| p.1).collect();
            let number = text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| err(at, format!("nombre illisible « {text} »")))?;
            tokens.push((at, Token::Number(number)));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|p| p.1.is_alphanumeric() || p.1 == '_' || p.1 == ':' || p.1 == '.')
            {
                i += 1;
            }
            tokens.push((
                at,
                Token::Ident(chars[start..i].iter().map(|p| p.1).collect()),
            ));
            continue;
        }
        let next = chars.get(i + 1).map(|p| p.1);
        let (op, len) = match (c, next) {
            ('<', Some('>')) => ("<>", 2),
            ('!', Some('=')) => ("<>", 2),
            ('<', Some('=')) => ("<=", 2),
            ('>', Some('=')) => (">=", 2),
            ('<', _) => ("<", 1),
            ('>', _) => (">", 1),
            ('=', _) => ("=", 1),
            ('(', _) => ("(", 1),
            (')', _) => (")", 1),
            (',', _) => (",", 1),
            _ => return Err(err(at, format!("caractère inattendu « {c} »"))),
        };
        tokens.push((at, Token::Op(op)));
        i += len;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
    crs: Crs,
}

/// An operand of a comparison: a property or a literal.
enum Operand {
    Property(Queryable),
    Value(Literal),
}

/// Parses `input`; coordinates of geometry literals are read in `crs` (`filter-crs`).
pub fn parse(input: &str, crs: Crs) -> Result<Expr, ParseError> {
    if input.len() > MAX_LEN {
        return Err(ParseError {
            at: MAX_LEN,
            message: format!("filtre trop long (plus de {MAX_LEN} octets)"),
        });
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(ParseError {
            at: 0,
            message: "filtre vide".into(),
        });
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: input.len(),
        depth: 0,
        crs,
    };
    let expr = parser.or()?;
    if parser.pos < parser.tokens.len() {
        return Err(parser.error("suite inattendue après une expression complète"));
    }
    Ok(expr)
}

impl Parser {
    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.0)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            at: self.at(),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.1)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).map(|t| t.1.clone());
        self.pos += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), ParseError> {
        if self.op(op) {
            Ok(())
        } else {
            Err(self.error(format!("« {op} » attendu")))
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("imbrication trop profonde (plus de {MAX_DEPTH})")));
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and()?];
        while self.keyword("OR") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.not()?];
        while self.keyword("AND") {
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("NOT") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        if self.op("(") {
            let inner = self.nested(|p| p.or())?;
            self.expect(")")?;
            return Ok(inner);
        }
        if let Some(Token::Ident(word)) = self.peek() {
            let spatial = match word.to_ascii_uppercase().as_str() {
                "S_INTERSECTS" => Some(SpatialOp::Intersects),
                "S_DISJOINT" => Some(SpatialOp::Disjoint),
                "S_WITHIN" => Some(SpatialOp::Within),
                "S_CONTAINS" => Some(SpatialOp::Contains),
                "S_EQUALS" => Some(SpatialOp::Equals),
                "INTERSECTS" | "S_TOUCHES" | "S_OVERLAPS" | "S_CROSSES" | "T_AFTER"
                | "T_BEFORE" | "T_INTERSECTS" | "A_CONTAINS" | "CASEI" | "ACCENTI" => {
                    return Err(self.error(format!("fonction « {word} » non prise en charge")))
                }
                _ => None,
            };
            if let Some(op) = spatial {
                self.pos += 1;
                return self.spatial(op);
            }
        }
        let left = self.operand()?;
        self.predicate(left)
    }

    fn spatial(&mut self, op: SpatialOp) -> Result<Expr, ParseError> {
        self.expect("(")?;
        // Either argument may be the geometry property; the other is the literal.
        let first_is_property = self.geometry_property();
        let shape = if first_is_property {
            self.expect(",")?;
            self.shape()?
        } else {
            let shape = self.shape()?;
            self.expect(",")?;
            if !self.geometry_property() {
                return Err(self.error("la propriété « geometry » est attendue"));
            }
            shape
        };
        self.expect(")")?;
        // With the property second, "within" and "contains" swap.
        let op = match (first_is_property, op) {
            (false, SpatialOp::Within) => SpatialOp::Contains,
            (false, SpatialOp::Contains) => SpatialOp::Within,
            (_, op) => op,
        };
        Ok(Expr::Spatial(op, shape))
    }

    fn geometry_property(&mut self) -> bool {
        match self.peek() {
            Some(Token::Ident(w) | Token::Quoted(w))
                if matches!(
                    w.to_ascii_lowercase().as_str(),
                    "geometry" | "geom" | "the_geom"
                ) =>
            {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        match self.next() {
            Some(Token::Number(n)) => Ok(n),
            _ => {
                self.pos -= 1;
                Err(self.error("nombre attendu"))
            }
        }
    }

    fn coord(&mut self) -> Result<Coord<f64>, ParseError> {
        let at = self.at();
        let x = self.number()?;
        let y = self.number()?;
        // A third ordinate (height) is allowed and ignored.
        if matches!(self.peek(), Some(Token::Number(_))) {
            self.pos += 1;
        }
        let (lon, lat) = self
            .crs
            .unproject(x, y)
            .map_err(|message| ParseError { at, message })?;
        if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(ParseError {
                at,
                message: format!("coordonnées hors du globe ({x} {y})"),
            });
        }
        Ok(Coord { x: lon, y: lat })
    }

    fn ring(&mut self) -> Result<LineString<f64>, ParseError> {
        self.expect("(")?;
        let mut coords = vec![self.coord()?];
        while self.op(",") {
            coords.push(self.coord()?);
        }
        self.expect(")")?;
        if coords.len() < 4 || coords.first() != coords.last() {
            return Err(self.error(
                "un anneau de polygone a au moins 4 positions, la dernière égale à la première",
            ));
        }
        Ok(LineString(coords))
    }

    fn polygon(&mut self) -> Result<Polygon<f64>, ParseError> {
        self.expect("(")?;
        let exterior = self.ring()?;
        let mut holes = Vec::new();
        while self.op(",") {
            holes.push(self.ring()?);
        }
        self.expect(")")?;
        Ok(Polygon::new(exterior, holes))
    }

    fn shape(&mut self) -> Result<Shape, ParseError> {
        let word = match self.next() {
            Some(Token::Ident(w)) => w.to_ascii_uppercase(),
            _ => {
                self.pos -= 1;
                return Err(self.error(
                    "géométrie attendue (POINT, MULTIPOINT, POLYGON, MULTIPOLYGON ou BBOX)",
                ));
            }
        };
        self.nested(|p| match word.as_str() {
            "POINT" => {
                p.expect("(")?;
                let c = p.coord()?;
                p.expect(")")?;
                Ok(Shape::Points(MultiPoint(vec![Point(c)])))
            }
            "MULTIPOINT" => {
                p.expect("(")?;
                let mut points = Vec::new();
                loop {
                    let wrapped = p.op("(");
                    points.push(Point(p.coord()?));
                    if wrapped {
                        p.expect(")")?;
                    }
                    if !p.op(",") {
                        break;
                    }
                }
                p.expect(")")?;
                Ok(Shape::Points(MultiPoint(points)))
            }
            "POLYGON" => Ok(Shape::Area(MultiPolygon(vec![p.polygon()?]))),
            "MULTIPOLYGON" => {
                p.expect("(")?;
                let mut polygons = vec![p.polygon()?];
                while p.op(",") {
                    polygons.push(p.polygon()?);
                }
                p.expect(")")?;
                Ok(Shape::Area(MultiPolygon(polygons)))
            }
            "BBOX" | "ENVELOPE" => {
                p.expect("(")?;
                let mut numbers = vec![p.number()?];
                while p.op(",") {
                    numbers.push(p.number()?);
                }
                p.expect(")")?;
                let (x1, y1, x2, y2) = match numbers[..] {
                    [a, b, c, d] if word == "BBOX" => (a, b, c, d),
                    // The old ENVELOPE order is west, east, north, south.
                    [w, e, n, s] => (w, s, e, n),
                    [a, b, _, c, d, _] if word == "BBOX" => (a, b, c, d),
                    _ => return Err(p.error("BBOX attend 4 nombres (ouest, sud, est, nord)")),
                };
                let (west, south) = p.crs.unproject(x1, y1).map_err(|m| p.error(m))?;
                let (east, north) = p.crs.unproject(x2, y2).map_err(|m| p.error(m))?;
                if west > east || south > north {
                    return Err(p.error("BBOX : ouest ≤ est et sud ≤ nord attendus"));
                }
                Ok(Shape::Rect(Rect::new(
                    Coord { x: west, y: south },
                    Coord { x: east, y: north },
                )))
            }
            other => Err(p.error(format!("géométrie « {other} » non prise en charge"))),
        })
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let at = self.at();
        match self.next() {
            Some(Token::Text(t)) => Ok(Operand::Value(Literal::Text(t))),
            Some(Token::Number(n)) => Ok(Operand::Value(Literal::Number(n))),
            Some(Token::Quoted(name)) => Queryable::parse(&name)
                .map(Operand::Property)
                .ok_or_else(|| unknown_property(at, &name)),
            Some(Token::Ident(word)) => match word.to_ascii_uppercase().as_str() {
                "TRUE" => Ok(Operand::Value(Literal::Bool(true))),
                "FALSE" => Ok(Operand::Value(Literal::Bool(false))),
                "DATE" | "TIMESTAMP" => {
                    self.expect("(")?;
                    let text_at = self.at();
                    let Some(Token::Text(text)) = self.next() else {
                        return Err(ParseError {
                            at: text_at,
                            message: format!("{word} attend une chaîne entre apostrophes"),
                        });
                    };
                    self.expect(")")?;
                    let instant = if word.eq_ignore_ascii_case("DATE") {
                        crate::dates::parse_date(&text)
                            .ok()
                            .and_then(|d| d.and_hms_opt(0, 0, 0))
                            .map(|d| d.and_utc())
                    } else {
                        crate::dates::parse_instant(&text).ok()
                    };
                    instant
                        .map(|i| Operand::Value(Literal::Instant(i)))
                        .ok_or(ParseError {
                            at: text_at,
                            message: format!("date illisible « {text} » (AAAA-MM-JJ ou RFC 3339)"),
                        })
                }
                _ => Queryable::parse(&word)
                    .map(Operand::Property)
                    .ok_or_else(|| unknown_property(at, &word)),
            },
            Some(Token::Op(op)) => Err(ParseError {
                at,
                message: format!("« {op} » inattendu"),
            }),
            None => Err(ParseError {
                at,
                message: "fin du filtre inattendue".into(),
            }),
        }
    }

    fn literal(&mut self, property: Queryable) -> Result<Literal, ParseError> {
        let at = self.at();
        match self.operand()? {
            Operand::Value(value) => check_type(property, value, at),
            Operand::Property(_) => Err(ParseError {
                at,
                message: "une valeur est attendue ici, pas une propriété".into(),
            }),
        }
    }

    fn predicate(&mut self, left: Operand) -> Result<Expr, ParseError> {
        let at = self.at();
        let Operand::Property(property) = left else {
            // `literal op property`: the literal side is read, then the operator flipped.
            let Operand::Value(value) = left else {
                unreachable!()
            };
            let op = self.compare_op()?;
            let right_at = self.at();
            return match self.operand()? {
                Operand::Property(property) => Ok(Expr::Compare(
                    property,
                    op.flipped(),
                    check_type(property, value, at)?,
                )),
                Operand::Value(_) => Err(ParseError {
                    at: right_at,
                    message: "une comparaison porte sur une propriété".into(),
                }),
            };
        };
        let negated = self.keyword("NOT");
        let expr = if self.keyword("LIKE") {
            match self.literal(property)? {
                Literal::Text(pattern) => Expr::Like(property, pattern),
                _ => {
                    return Err(ParseError {
                        at,
                        message: "LIKE attend un motif entre apostrophes".into(),
                    })
                }
            }
        } else if self.keyword("BETWEEN") {
            let low = self.literal(property)?;
            if !self.keyword("AND") {
                return Err(self.error("AND attendu dans BETWEEN"));
            }
            Expr::Between(property, low, self.literal(property)?)
        } else if self.keyword("IN") {
            self.expect("(")?;
            let mut values = vec![self.literal(property)?];
            while self.op(",") {
                values.push(self.literal(property)?);
            }
            self.expect(")")?;
            Expr::In(property, values)
        } else if negated {
            return Err(self.error("LIKE, BETWEEN ou IN attendu après NOT"));
        } else if self.keyword("IS") {
            let not = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err(self.error("NULL attendu après IS"));
            }
            let test = Expr::IsNull(property);
            return Ok(if not { Expr::Not(Box::new(test)) } else { test });
        } else {
            let op = self.compare_op()?;
            return Ok(Expr::Compare(property, op, self.literal(property)?));
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    fn compare_op(&mut self) -> Result<CompareOp, ParseError> {
        let op = match self.peek() {
            Some(Token::Op("=")) => CompareOp::Eq,
            Some(Token::Op("<>")) => CompareOp::Ne,
            Some(Token::Op("<")) => CompareOp::Lt,
            Some(Token::Op("<=")) => CompareOp::Le,
            Some(Token::Op(">")) => CompareOp::Gt,
            Some(Token::Op(">=")) => CompareOp::Ge,
            _ => {
                return Err(self
                    .error("opérateur attendu (=, <>, <, <=, >, >=, LIKE, BETWEEN, IN, IS NULL)"))
            }
        };
        self.pos += 1;
        Ok(op)
    }
}

fn unknown_property(at: usize, name: &str) -> ParseError {
    ParseError {
        at,
        message: format!(
            "propriété inconnue « {name} » (voir /queryables : {}, geometry)",
            Queryable::ALL.map(Queryable::name).join(", ")
        ),
    }
}

fn check_type(property: Queryable, value: Literal, at: usize) -> Result<Literal, ParseError> {
    match (&value, property.is_timestamp()) {
        (Literal::Instant(_), true) | (Literal::Text(_), false) => Ok(value),
        (Literal::Text(text), true) => crate::dates::parse_instant(text)
            .map(Literal::Instant)
            .map_err(|_| ParseError {
                at,
                message: format!(
                    "« {} » est une date : TIMESTAMP('…') ou DATE('…') attendu",
                    property.name()
                ),
            }),
        _ => Err(ParseError {
            at,
            message: format!(
                "« {} » est {} : la valeur doit être {}",
                property.name(),
                if property.is_timestamp() {
                    "une date"
                } else {
                    "un texte"
                },
                if property.is_timestamp() {
                    "TIMESTAMP('…') ou DATE('…')"
                } else {
                    "entre apostrophes ('63113')"
                }
            ),
        }),
    }
}

/// `%` any run of characters, `_` one character, as CQL2's LIKE.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative wildcard matching with backtracking on the last `%`: up to the pattern's length
    // times the text's; the time budget of a request bounds the whole.
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

/// The time one request's filter may take over all the rows it looks at. A filter that needs
/// more is refused with a 400 that says so, rather than holding a database connection and a
/// core for as long as it likes; over the whole of France (3.3 million entries, about 6 s of
/// reading) a filter needs a `bbox` or a territory, which SQL narrows first.
pub const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// A filter that spent its [`TIME_BUDGET`].
#[derive(Debug, thiserror::Error)]
#[error(
    "filtre trop coûteux : son évaluation dépasse les 2 secondes de calcul d'une requête ; \
     simplifiez-le (moins de LIKE en « % », de OR) ou restreignez la sélection (bbox, commune) \
     / filter too costly: over 2 seconds of evaluation; simplify it or narrow the selection"
)]
pub struct TooCostly;

impl Expr {
    /// The values `property` must have for an entry to pass, when the filter says so at its
    /// top level (`commune = '63113'`, `typology IN ('mairie', 'poste')`, either in an `AND`):
    /// the selection is narrowed by them in SQL before any row is read, and the filter still
    /// tests every row.
    pub fn required_values(&self, property: Queryable) -> Option<Vec<String>> {
        match self {
            Expr::Compare(p, CompareOp::Eq, Literal::Text(value)) if *p == property => {
                Some(vec![value.clone()])
            }
            Expr::In(p, values) if *p == property => values
                .iter()
                .map(|v| match v {
                    Literal::Text(text) => Some(text.clone()),
                    _ => None,
                })
                .collect(),
            Expr::And(parts) => parts
                .iter()
                .filter_map(|part| part.required_values(property))
                .reduce(|kept, more| kept.into_iter().filter(|v| more.contains(v)).collect()),
            _ => None,
        }
    }

    /// Whether `subject` passes the filter. A comparison with a missing value is false.
    pub fn matches(&self, subject: &impl Subject) -> bool {
        match self {
            Expr::And(parts) => parts.iter().all(|p| p.matches(subject)),
            Expr::Or(parts) => parts.iter().any(|p| p.matches(subject)),
            Expr::Not(inner) => !inner.matches(subject),
            Expr::Bool(value) => *value,
            Expr::IsNull(property) => {
                if property.is_timestamp() {
                    subject.updated_at().is_none()
                } else {
                    subject.text(*property).is_none_or(str::is_empty)
                }
            }
            Expr::Compare(property, op, value) => {
                compare(subject, *property, value).is_some_and(|o| op.holds(o))
            }
            Expr::Between(property, low, high) => {
                compare(subject, *property, low).is_some_and(|o| o.is_ge())
                    && compare(subject, *property, high).is_some_and(|o| o.is_le())
            }
            Expr::In(property, values) => values
                .iter()
                .any(|v| compare(subject, *property, v).is_some_and(|o| o.is_eq())),
            Expr::Like(property, pattern) => subject
                .text(*property)
                .is_some_and(|text| like(text, pattern)),
            Expr::Spatial(op, shape) => {
                let (lon, lat) = subject.point();
                let point = Point::new(lon, lat);
                let intersects = match shape {
                    Shape::Points(points) => points.intersects(&point),
                    Shape::Area(area) => area.intersects(&point),
                    Shape::Rect(rect) => rect.intersects(&point),
                };
                match op {
                    SpatialOp::Intersects => intersects,
                    SpatialOp::Disjoint => !intersects,
                    SpatialOp::Within => match shape {
                        Shape::Points(points) => points.0.contains(&point),
                        Shape::Area(area) => area.contains(&point),
                        Shape::Rect(rect) => rect.contains(&point),
                    },
                    SpatialOp::Contains | SpatialOp::Equals => match shape {
                        Shape::Points(points) => points.0.iter().all(|p| *p == point),
                        _ => false,
                    },
                }
            }
        }
    }
}

fn compare(
    subject: &impl Subject,
    property: Queryable,
    value: &Literal,
) -> Option<std::cmp::Ordering> {
    match value {
        Literal::Instant(instant) => subject.updated_at().map(|at| at.cmp(instant)),
        Literal::Text(text) => subject.text(property).map(|own| own.cmp(text.as_str())),
        Literal::Number(_) | Literal::Bool(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry {
        typology: &'static str,
        insee: &'static str,
        name: &'static str,
        at: (f64, f64),
    }

    impl Subject for Entry {
        fn text(&self, property: Queryable) -> Option<&str> {
            match property {
                Queryable::Typology => Some(self.typology),
                Queryable::Commune => Some(self.insee),
                Queryable::Name => Some(self.name),
                Queryable::Departement => Some(&self.insee[..2]),
                _ => None,
            }
        }
        fn updated_at(&self) -> Option<DateTime<Utc>> {
            DateTime::parse_from_rfc3339("2025-06-01T10:00:00Z")
                .ok()
                .map(|d| d.with_timezone(&Utc))
        }
        fn point(&self) -> (f64, f64) {
            self.at
        }
    }

    const MAIRIE: Entry = Entry {
        typology: "mairie",
        insee: "63113",
        name: "Mairie de Clermont-Ferrand",
        at: (3.0863, 45.7797),
    };

    fn eval(filter: &str) -> bool {
        parse(filter, Crs::Crs84)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(&MAIRIE)
    }

    #[test]
    fn comparisons_and_logic() {
        assert!(eval("typology = 'mairie'"));
        assert!(!eval("typology <> 'mairie'"));
        assert!(eval("typology = 'ecole' OR insee_code = '63113'"));
        assert!(!eval("typology = 'ecole' AND insee_code = '63113'"));
        assert!(eval("NOT (typology = 'ecole')"));
        assert!(eval("'mairie' = typology"));
        assert!(eval("\"departement\" = '63'"));
        assert!(eval("commune IN ('63001', '63113')"));
        assert!(eval("commune NOT IN ('63001')"));
        assert!(eval("name LIKE 'Mairie de %'"));
        assert!(!eval("name NOT LIKE '%Clermont%'"));
        assert!(eval("insee_code BETWEEN '63000' AND '63999'"));
        assert!(eval("postcode IS NULL"));
        assert!(!eval("name IS NULL"));
        assert!(eval("updated_at > TIMESTAMP('2025-01-01T00:00:00Z')"));
        assert!(eval("updated_at < DATE('2026-01-01')"));
    }

    #[test]
    fn spatial_functions() {
        assert!(eval("S_INTERSECTS(geometry, BBOX(3, 45, 4, 46))"));
        assert!(!eval("S_INTERSECTS(geometry, BBOX(4, 45, 5, 46))"));
        assert!(eval(
            "S_WITHIN(geometry, POLYGON((3 45, 4 45, 4 46, 3 46, 3 45)))"
        ));
        assert!(eval(
            "S_DISJOINT(geometry, POLYGON((4 45, 5 45, 5 46, 4 46, 4 45)))"
        ));
        assert!(eval("S_INTERSECTS(POINT(3.0863 45.7797), geometry)"));
        assert!(eval(
            "s_intersects(geometry, bbox(3,45,4,46)) and typology='mairie'"
        ));
        let lambert = parse(
            "S_INTERSECTS(geometry, BBOX(700000, 6500000, 720000, 6550000))",
            Crs::Lambert93,
        )
        .unwrap();
        assert!(lambert.matches(&MAIRIE));
    }

    #[test]
    fn malformed_filters_say_where() {
        for (filter, at) in [
            ("typology =", 10),
            ("typology = mairie", 11),
            ("typologie = 'x'", 0),
            ("typology = 'x", 11),
            ("(typology = 'x'", 15),
            ("typology = 'x')", 14),
            ("insee_code = 63113", 13),
            ("S_INTERSECTS(geometry, POLYGON((3 45, 4 45, 3 45)))", 49),
            ("S_INTERSECTS(geometry, BBOX(4, 46, 3, 45))", 41),
            ("S_INTERSECTS(geometry, CIRCLE(3 45))", 29),
            ("S_INTERSECTS(geometry, POINT(300 45))", 29),
            ("updated_at > '2025'", 13),
            ("typology ~ 'x'", 9),
            ("", 0),
            ("AND", 0),
            ("typology NOT = 'x'", 13),
            ("S_TOUCHES(geometry, POINT(3 45))", 0),
        ] {
            let error = parse(filter, Crs::Crs84).expect_err(filter);
            assert_eq!(error.at, at, "{filter}: {error}");
            assert!(!error.message.is_empty());
        }
        let deep = format!("{}typology = 'x'{}", "(".repeat(500), ")".repeat(500));
        assert!(parse(&deep, Crs::Crs84).is_err());
        let long = "typology = 'x' OR ".repeat(2_000) + "typology = 'x'";
        assert!(parse(&long, Crs::Crs84).is_err());
        let nots = "NOT ".repeat(10_000) + "typology = 'x'";
        assert!(parse(&nots, Crs::Crs84).is_err());
    }

    #[test]
    fn required_values_are_read_from_the_top_level_only() {
        let values =
            |filter: &str, property| parse(filter, Crs::Crs84).unwrap().required_values(property);
        assert_eq!(
            values("commune = '63113'", Queryable::Commune),
            Some(vec!["63113".into()])
        );
        assert_eq!(
            values(
                "typology IN ('mairie','poste') AND name LIKE '%a%'",
                Queryable::Typology
            ),
            Some(vec!["mairie".into(), "poste".into()])
        );
        assert_eq!(
            values(
                "commune IN ('63113','63300') AND commune = '63300'",
                Queryable::Commune
            ),
            Some(vec!["63300".into()])
        );
        // Anything that lets other values pass says nothing.
        for filter in [
            "commune = '63113' OR name = 'x'",
            "NOT commune = '63113'",
            "commune <> '63113'",
        ] {
            assert_eq!(values(filter, Queryable::Commune), None, "{filter}");
        }
        assert_eq!(values("commune = '63113'", Queryable::Typology), None);
    }

    #[test]
    fn like_wildcards() {
        assert!(like("abc", "a%"));
        assert!(like("abc", "%c"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("", "%"));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
    }
}
