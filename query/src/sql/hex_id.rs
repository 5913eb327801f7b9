//! `hex_id(binary)`: renders a stored binary id as lowercase hex, the form ids take in SQL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HexId {
    signature: Signature,
}

impl HexId {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(Self {
            signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable),
        }))
    }
}

fn hex_array(array: &dyn Array) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 32);
    let mut text = String::new();
    let mut push = |bytes: Option<&[u8]>| match bytes {
        Some(bytes) => {
            text.clear();
            for byte in bytes {
                text.push(char::from(b"0123456789abcdef"[(byte >> 4) as usize]));
                text.push(char::from(b"0123456789abcdef"[(byte & 15) as usize]));
            }
            out.append_value(&text);
        }
        None => out.append_null(),
    };
    match array.data_type() {
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().iter().for_each(&mut push),
        DataType::Binary => array.as_binary::<i32>().iter().for_each(&mut push),
        other => return exec_err!("hex_id takes a binary id, not {other}"),
    }
    Ok(Arc::new(out.finish()))
}

impl ScalarUDFImpl for HexId {
    fn name(&self) -> &str {
        "hex_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    /// An id column without nulls stays without nulls: the SQL schema promises it.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.into_iter().next() else {
            return exec_err!("hex_id takes one argument");
        };
        match arg {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(hex_array(&array)?)),
            ColumnarValue::Scalar(scalar) => {
                let array = hex_array(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
        }
    }
}
